#!/usr/bin/env bash
# Mutation testing of the core modules (not part of CI): plants one small bug at a time and
# reports the mutants the tests did not catch. See scripts/mutation.py and docs/testing.md.
#   bash scripts/mutation.sh                       # a stable 3% sample + issue 18's known bugs
#   FRACTION=1 bash scripts/mutation.sh            # every mutant (hours on 2 cores)
#   bash scripts/mutation.sh --list                # count the mutants per file
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p runs
exec nice "$PY" scripts/mutation.py --fraction "${FRACTION:-0.03}" \
  --out "${OUT:-runs/mutation.json}" "$@"
