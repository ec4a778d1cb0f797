#!/usr/bin/env bash
# The GPU check (issue 18, item 6): what only a CUDA machine can tell, in under 8 minutes, figures to bench/.
#
#   bash scripts/gpu_check.sh            # on a machine with a CUDA device and lora-ft's environment (scripts/setup.sh
#                                        # with a CUDA build of torch) and the shared data beside the repo (../shared)
#
# 1. the tests marked `gpu` (tests/test_gpu.py: CUDA vs CPU training, bf16 and fp16 resumes with the loss scaler,
#    the CUDA generator in checkpoints, FSDP on two GPUs where there are two)                    budget 150 s
# 2. scripts/gpu_precision.py: LoRA on a GPT-2 M shape in fp32, bf16 and fp16 against the CPU fp32 run of the same
#    rows, each step's loss within the tolerance it states -> bench/gpu-precision-cuda.json       budget 150 s
# 3. bash scripts/bench.sh --device cuda: decoding (GPT-2 M, a 1B LLaMA shape) and full-depth GPT-2 M training
#    steps against their peers -> bench/*-cuda.json and the README's table                       budget 150 s
# Each stage runs under `timeout`; bench/gpu-check-cuda.json records every stage's status and seconds. Exit 1 if any
# stage failed or ran out of time. Never run yet: no GPU has been lent to this project.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$python" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
  echo "gpu_check: no CUDA device visible to $python (torch $("$python" -c 'import torch; print(torch.__version__)'))" >&2
  exit 2
fi
mkdir -p bench
declare -A status seconds
stage() {  # stage NAME BUDGET_S COMMAND...
  local name=$1 budget=$2 start=$SECONDS
  shift 2
  echo "== $name (budget ${budget} s): $*"
  timeout --signal=TERM --kill-after=15 "$budget" "$@"
  local code=$?
  seconds[$name]=$((SECONDS - start))
  if [[ $code -eq 0 ]]; then status[$name]=passed; elif [[ $code -eq 124 ]]; then status[$name]=timeout; else status[$name]="failed ($code)"; fi
  echo "== $name: ${status[$name]} in ${seconds[$name]} s"
}
stage gpu_tests 150 "$python" -m pytest -q -m gpu tests/test_gpu.py
stage precision 150 "$python" scripts/gpu_precision.py --steps 30
stage bench 150 bash scripts/bench.sh --device cuda
"$python" - "${status[gpu_tests]}" "${seconds[gpu_tests]}" "${status[precision]}" "${seconds[precision]}" \
  "${status[bench]}" "${seconds[bench]}" <<'PY'
import json, sys, torch
names = ("gpu_tests", "precision", "bench")
values = sys.argv[1:]
report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
          "stages": {n: {"status": values[2 * i], "seconds": int(values[2 * i + 1])} for i, n in enumerate(names)},
          "command": "bash scripts/gpu_check.sh"}
open("bench/gpu-check-cuda.json", "w").write(json.dumps(report, indent=2) + "\n")
print(json.dumps(report, indent=2))
PY
for name in gpu_tests precision bench; do [[ "${status[$name]}" == passed ]] || exit 1; done
