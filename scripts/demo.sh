#!/usr/bin/env bash
# Set everything up, then run the offline E2E demo (configs/demo_e2e_cpu.yaml) and print its table.
#   bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo_e2e.py "$@"
