#!/usr/bin/env bash
# The slow target: installs the assets only slow tests use, then runs them (not part of CI).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python3 -m pip install -q -e ".[dev,slow]"
python3 -m pytest -m "slow and not gpu" -q "$@"
