"""LoRA on a GPT-2 M shape on CUDA in fp32, bf16 and fp16 against the CPU fp32 run of the same rows (issue 18 item 6).

    PYTHONPATH=. python scripts/gpu_precision.py [--steps 30] [--out bench/gpu-precision-cuda.json]

The paper's E2E recipe (LoRA r=4 on q and v, alpha 32, AdamW 2e-4, batch 8; dropout off so that the runs draw no
device-dependent masks), GPT-2 M's shape (24 blocks x 1024, the shipped shape) with random weights from the same seed,
`--steps` optimizer steps on the same E2E training rows. Four runs of `lora-ft train`: the CPU in fp32 (CUDA hidden),
then CUDA in fp32, bf16 and fp16 (training.mixed_precision: Accelerate's autocast; fp16 with its loss scaler). Each
step's training loss (train.log, 4 decimals) is compared with the CPU fp32 run's, and the final LoRA weights too.

Tolerances (the largest relative difference of any step's loss): fp32 1e-4 (the log's 4 decimals on a loss of ~10, and
PyTorch's default of no TF32 in matmuls); bf16 1e-2 (8 mantissa bits: 4e-3 per rounding, autocast keeps the softmax
and the loss in fp32); fp16 2e-3 (11 bits). Exit 1 if a run is outside its tolerance. Needs a CUDA device.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
TOLERANCE = {"fp32": 1e-4, "bf16": 1e-2, "fp16": 2e-3}
STEP = re.compile(r"step (\d+) train loss(?: \([^)]*\))? ([0-9.]+)")


def config(run_dir: Path, steps: int) -> dict:
    from tiny_runs import tiny_run_config

    cfg = tiny_run_config(run_dir, epochs=1, batch_size=8, learning_rate=2e-4, warmup_steps=0, max_steps=steps,
                          log_every_steps=1, checkpoint_every_steps=None)
    cfg["model"] = {**cfg["model"], "name_or_path": "gpt2-medium", "config_overrides": {}}
    # E2E rows as the test suite's runs take them (shared/data/e2e/valid.txt: MRs 0-99 to train, 100-101 to validate)
    cfg["task"].update(train_slice="0:100", max_train_examples=8 * steps, validation_slice="100:102", max_eval_examples=8)
    cfg["method"] = {"name": "lora", "rank": 4, "alpha": 32, "dropout": 0.0, "targets": ["q", "v"]}
    return cfg


def run(work: Path, name: str, precision: str, steps: int, cpu: bool) -> tuple[list[float], float]:
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config(work / name, steps)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lora_ft", "train", "--config", str(path),
                           f"training.mixed_precision={precision}"], env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{name}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    losses = {int(s): float(v) for s, v in STEP.findall((work / name / "train.log").read_text())}
    return [losses[s] for s in sorted(losses)], round(time.perf_counter() - start, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--work", type=Path, default=Path("/tmp/lora-ft-gpu-precision"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "gpu-precision-cuda.json")
    args = parser.parse_args()
    import torch

    from lora_ft.checkpoint import read_trained

    if not torch.cuda.is_available():
        sys.exit("gpu_precision.py needs a CUDA device")
    args.work.mkdir(parents=True, exist_ok=True)
    reference, seconds = run(args.work, "cpu-fp32", "no", args.steps, cpu=True)
    expected = read_trained(args.work / "cpu-fp32")[0]
    result = {"benchmark": "LoRA r=4 (q, v) on a GPT-2 M shape, random weights, CUDA fp32/bf16/fp16 vs CPU fp32",
              "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "steps": args.steps,
              "tolerance_max_relative_loss_diff": TOLERANCE, "cpu_fp32_losses": reference,
              "wall_s": {"cpu-fp32": seconds}, "runs": {}, "command": "PYTHONPATH=. python scripts/gpu_precision.py"}
    failed = []
    for precision, setting in (("fp32", "no"), ("bf16", "bf16"), ("fp16", "fp16")):
        losses, seconds = run(args.work, f"cuda-{precision}", setting, args.steps, cpu=False)
        got = read_trained(args.work / f"cuda-{precision}")[0]
        relative = max(abs(a - b) / abs(b) for a, b in zip(losses, reference))
        within = len(losses) == len(reference) and relative <= TOLERANCE[precision]
        failed += [] if within else [precision]
        result["wall_s"][f"cuda-{precision}"] = seconds
        result["runs"][precision] = {
            "losses": losses, "max_relative_loss_diff": relative, "within_tolerance": within,
            "max_abs_lora_weight_diff": max(float((got[k].float() - expected[k].float()).abs().max()) for k in expected),
        }
    result["passed"] = not failed
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "cpu_fp32_losses"}, indent=2))
    if failed:
        sys.exit(f"outside tolerance: {', '.join(failed)}")


if __name__ == "__main__":
    main()
