#!/usr/bin/env bash
# Mutation testing of the modules whose bugs corrupt results silently (pyproject [tool.mutmut]).
# Not part of CI (tens of minutes on 2 cores). Usage: scripts/mutation.sh [mutant-name-glob ...]
# Results: `mutmut results` / `mutmut show NAME`; scores go into docs/testing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH="$PWD"
nice -n 19 "$PY" -m mutmut run --max-children "${MUTMUT_CHILDREN:-2}" "$@"
"$PY" -m mutmut results --all true > mutants/results.txt 2>&1 || "$PY" -m mutmut results > mutants/results.txt 2>&1 || true
echo "results in mutants/results.txt"
