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
set +e
