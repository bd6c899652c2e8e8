#!/usr/bin/env bash
# Sets up the environment and runs the main job end to end on the default
# Omniglot data: short meta-training of the pretrained mcunet-5fps, then
# None / LastLayer / SparseUpdate / TinyTrain / FullTrain on test tasks, then
# results.json, results.md and the Pareto plot in runs/main (or runs/quick).
#   bash scripts/main.sh            # default run
#   bash scripts/main.sh --quick    # minutes
# Further arguments go to experiments.evaluate (e.g. --config.episodes=100).
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"
set -euo pipefail
ARG=""
WORKDIR=runs/main
if [ "${1:-}" = "--quick" ]; then
  ARG=":quick"; WORKDIR=runs/quick; shift
fi
python -m experiments.evaluate \
  --config="tinytrain_jax/configs/default.py${ARG}" \
  --workdir="$WORKDIR" "$@"
echo "results: $WORKDIR/results.md  plot: $WORKDIR/pareto.png"
