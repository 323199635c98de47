#!/usr/bin/env bash
# The one-call GPU check (issues 7, 19). Runs on a bare GPU machine that has PyTorch but no DALI/PyAV/tomli-w
# and no network: unpacks the packages carried there in parts (bench/gpu_wheels.sh, bench/README.md), then
# runs every step of bench/gpu_check/ (each time-boxed; rows in $OUT/rows.jsonl as they finish, the table
# printed last, JSON + table + log in $OUT).
#
#   bash bench/gpu_check.sh [--out DIR] [--steps 0,1,2,3,4,5,6]   # GPU machine, the last device call
#   bash bench/gpu_check.sh --dry-run [--out DIR]                  # CPU rehearsal (CI): same steps and boxes
#
# Environment: PYTHON (default .venv/bin/python if present, else python3), STAGE (/tmp/wheels), SITE (/tmp/site),
# WORK (/tmp/gpu_check_work on the GPU: a rerun reuses its test videos and torch.compile's cache is warm).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The repo's venv where there is one (here, CI); the GPU machine has none: its python3 holds PyTorch.
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export SITE="${SITE:-/tmp/site}"

dry=0
for a in "$@"; do [ "$a" = --dry-run ] && dry=1; done
extra=()
if [ "$dry" = 0 ]; then
  if "$PYTHON" -c 'import nvidia.dali, av, tomli_w' 2>/dev/null; then
    export GPU_CHECK_INSTALL="already importable, nothing installed"
  else
    t0=$(date +%s)
    if [ -d "$SITE" ] && PYTHONPATH="$SITE" "$PYTHON" -c 'import nvidia.dali, av, tomli_w' 2>/dev/null; then
      msg="reused $SITE"
    else
      msg="$(PYTHON="$PYTHON" bash bench/gpu_wheels.sh install 2>&1 | tail -1)" \
        || { echo "gpu_check: install failed: $msg" >&2; exit 2; }
    fi
    export GPU_CHECK_INSTALL="$msg ($(( $(date +%s) - t0 )) s)"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  fi
  extra+=(--work "${WORK:-/tmp/gpu_check_work}")
fi
exec "$PYTHON" -m bench.gpu_check ${extra[@]+"${extra[@]}"} "$@"
