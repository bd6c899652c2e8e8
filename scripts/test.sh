#!/usr/bin/env bash
# Sets up the environment and runs the whole test suite (slow tests opt-in with
# TINYTRAIN_SLOW=1). Used verbatim by .ci/run.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"
set -euo pipefail
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
MARK="not slow"
[ "${TINYTRAIN_SLOW:-0}" = "1" ] && MARK=""
python -m pytest tests -q -n 2 --durations=15 -m "$MARK" "$@"
