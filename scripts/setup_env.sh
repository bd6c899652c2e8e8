#!/usr/bin/env bash
# Creates .venv with requirements.txt (idempotent) and points the asset cache at
# ../shared when it exists. Source it: `source scripts/setup_env.sh`.
set -e
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Reinstall only when requirements.txt changed since the last install.
if ! cmp -s requirements.txt .venv/.requirements.installed 2>/dev/null; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  cp requirements.txt .venv/.requirements.installed
fi
source .venv/bin/activate
if [ -z "${TINYTRAIN_ASSETS:-}" ] && [ -d ../shared/weights ]; then
  export TINYTRAIN_ASSETS="$(cd ../shared && pwd)"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# glibc keeps freed memory for reuse: XLA:CPU allocates each program's temp
# arena per call from a worker thread, which glibc serves with a fresh mmap,
# so every call page-faulted the whole arena (mcunet-5fps fwd+bwd, 100 images
# at 128 px: 206K faults, 0.46 s of system time per call; with these 20K and
# 1.6x faster). docs/devices.md, "Host memory".
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-1}"
export MALLOC_MMAP_MAX_="${MALLOC_MMAP_MAX_:-0}"
export MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-68719476736}"
set +e
