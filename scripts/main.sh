#!/usr/bin/env bash
# Sets up the environment and runs the main job end to end: meta-train the
# pretrained backbones on mini-ImageNet (cached after the first run), choose
# each method's lr on mini-ImageNet val, then None / LastLayer / TinyTL /
# SparseUpdate / TinyTrain / FullTrain (+ the start-swap ablation) on
# Omniglot, the CIFAR-10 subset and mini-ImageNet test; results.json,
# results.md, pareto.png and meta_val.png in runs/main (or runs/quick).
#   bash scripts/main.sh            # default run
#   bash scripts/main.sh --quick    # minutes
# Further arguments go to experiments.evaluate (e.g. --config.episodes=100).
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"
set -euo pipefail
# One XLA device per core on a CPU host (GPUs/TPUs are unaffected): the tasks
# spread over them, and per-task results do not depend on the device count
# (docs/devices.md). One CPU device leaves a core idle on FullTrain's steps.
if [ -z "${XLA_FLAGS:-}" ]; then
  export XLA_FLAGS="--xla_force_host_platform_device_count=$(nproc)"
fi
ARG=""
WORKDIR=runs/main
if [ "${1:-}" = "--quick" ]; then
  ARG=":quick"; WORKDIR=runs/quick; shift
fi
for a in "$@"; do
  case "$a" in --workdir=*) WORKDIR="${a#--workdir=}" ;; esac
done
python -m experiments.evaluate \
  --config="tinytrain_jax/configs/default.py${ARG}" \
  --workdir="$WORKDIR" "$@"
echo "results: $WORKDIR/results.md  plot: $WORKDIR/pareto.png"
