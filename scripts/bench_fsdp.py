"""FSDP on CPU processes, measured: full fine-tuning on 1, 2 and 3 processes, a kill mid-epoch resumed on 2 and on 3,
and each process's peak memory while it writes a checkpoint, sharded (lora-ft) against gathered into one process.

    PYTHONPATH=. python scripts/bench_fsdp.py                   # GPT-2 shape, 4 blocks x 512 wide: 38.8 M parameters
    PYTHONPATH=. python scripts/bench_fsdp.py --layers 2 --width 128 --out /tmp/fsdp.json   # a quick look

Writes bench/fsdp-cpu.json. Every run trains the same rows (24 E2E training rows in batches of 6, 2 epochs = 8 steps,
a checkpoint every 3 steps) from the same random weights; the FSDP runs go through `accelerate launch --config_file
configs/accelerate/fsdp_full_shard.yaml` (gloo; lora-ft switches Accelerate to FSDP2 on CPU processes, sharded.py).

Memory: each FSDP process runs lora-ft's training under this script (`--worker`), which wraps lora-ft's checkpoint
writer: before each checkpoint it returns freed heap to the kernel and resets the peak resident set (VmHWM, through
/proc/self/clear_refs), after it reads the new peak. "Gathered" is the same measurement around what a checkpoint needs
when one process writes the whole state: torch's full state dicts of the model and AdamW (`full_state_dict=True,
cpu_offload=True`, what Accelerate's FULL_STATE_DICT does), written by the main process as one-file checkpoints. glibc
returns large freed blocks to the kernel (MALLOC_MMAP_THRESHOLD_=131072), so the resident set follows the tensors.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
FSDP_CONFIG = ROOT / "configs" / "accelerate" / "fsdp_full_shard.yaml"
KILL_STEP = 3  # mid-epoch (4 steps an epoch), right after its checkpoint


def rss(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def reset_peak() -> int:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return rss("VmRSS")


# ------------------------------------------------------------------------------------------------------------ worker


def worker(config: str, mem_out: Path) -> int:
    """Inside `accelerate launch`: lora-ft's training, with each checkpoint's (and one gathered save's) memory taken."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    import lora_ft.train_saving as saving
    from lora_ft import cli
    from lora_ft.checkpoint import save_trained
    from lora_ft.training_state import save_state

    rank = int(os.environ.get("RANK", "0"))
    records = []

    def measured(what, call):
        before = reset_peak()
        start = time.perf_counter()
        result = call()
        records.append({"what": what, "rss_before": before, "peak": rss("VmHWM"), "peak_delta": rss("VmHWM") - before,
                        "seconds": round(time.perf_counter() - start, 3)})
        return result

    original_write = saving.write_checkpoint

    def write_checkpoint(accelerator, root, name, **kwargs):
        return measured(f"sharded checkpoint {name}", lambda: original_write(accelerator, root, name, **kwargs))

    saving.write_checkpoint = write_checkpoint
    original_final = saving.Saving._save_final_weights

    def gathered_then_final(self):
        acc, out = self.accelerator, Path(self.run_dir) / "gathered-checkpoint"

        def gathered():
            options = StateDictOptions(full_state_dict=True, cpu_offload=True)  # the whole state, in the main process
            names = {n for n, p in self.model.named_parameters() if p.requires_grad}
            model_state = {k: v for k, v in get_model_state_dict(self.model, options=options).items() if k in names}
            inner = getattr(self.optimizer, "optimizer", self.optimizer)
            optimizer_state = get_optimizer_state_dict(self.model, inner, options=options)
            if acc.is_main_process:
                out.mkdir(exist_ok=True)
                save_trained(self.model, self.method, out, model_state)
                save_state(optimizer_state, out, "optimizer")
            del model_state, optimizer_state
            acc.wait_for_everyone()

        measured("gathered checkpoint", gathered)
        if acc.is_main_process:
            records.append({"what": "gathered checkpoint bytes", "bytes": sum(p.stat().st_size for p in out.iterdir())})
            shutil.rmtree(out)
        return original_final(self)

    saving.Saving._save_final_weights = gathered_then_final
    code = cli.main(["train", "--config", config])
    mem_out.mkdir(parents=True, exist_ok=True)
    (mem_out / f"mem-{rank}.json").write_text(json.dumps(records, indent=1))
    return code


# ------------------------------------------------------------------------------------------------------- orchestrator


def run_config(run_dir: Path, layers: int, width: int) -> dict:
    from tiny_runs import tiny_run_config

    config = tiny_run_config(run_dir, batch_size=6, eval_batch_size=6, checkpoint_every_steps=KILL_STEP)
    config["model"]["config_overrides"] = {"n_layer": layers, "n_embd": width, "n_head": max(2, width // 64)}
    config["task"]["max_train_examples"] = 24
    config["method"] = {"name": "ft"}
    return config


def launch(work: Path, config: dict, processes: int, *args: str, worker_mem: Path | None = None,
           stop_at: str | None = None) -> tuple[float, subprocess.CompletedProcess]:
    import yaml
    from tiny_runs import free_port, launch_env

    path = work / f"{Path(config['output']['dir']).name}-{processes}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = launch_env(MALLOC_MMAP_THRESHOLD_="131072", **({"LORA_FT_STOP_AT": stop_at} if stop_at else {}))
    if processes == 1:
        cmd = [sys.executable, "-m", "lora_ft", "train", "--config", str(path), *args]
    else:
        target = [str(Path(__file__).resolve()), "--worker", str(path), "--mem-out", str(worker_mem)] if worker_mem \
            else ["-m", "lora_ft", "train", "--config", str(path), *args]
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG),
               "--num_processes", str(processes), "--main_process_port", str(free_port()), *target]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if (proc.returncode != 0) != bool(stop_at):
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return round(time.perf_counter() - start, 1), proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--mem-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--work", type=Path, default=Path("/tmp/lora-ft-bench-fsdp"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "fsdp-cpu.json")
    args = parser.parse_args()
    if args.worker:
        sys.exit(worker(args.worker, args.mem_out))

    import torch

    from lora_ft.checkpoint import read_trained
    from lora_ft.results import read_results

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    config = lambda name: run_config(args.work / name, args.layers, args.width)  # noqa: E731
    seconds = {}
    seconds["1 process"], _ = launch(args.work, config("p1"), 1)
    for n in (2, 3):
        seconds[f"FSDP {n}"], _ = launch(args.work, config(f"p{n}"), n, worker_mem=args.work / f"mem-{n}")
    _, killed = launch(args.work, config("killed"), 2, stop_at=f"after-step-checkpoint:{KILL_STEP}")
    shutil.copytree(args.work / "killed", args.work / "resumed-on-3")
    shutil.move(args.work / "killed", args.work / "resumed-on-2")
    for n in (2, 3):
        seconds[f"resume on {n}"], _ = launch(args.work, config(f"resumed-on-{n}"), n, "--resume")

    weights = {name: read_trained(args.work / name)[0] for name in ("p1", "p2", "p3", "resumed-on-2", "resumed-on-3")}

    def max_diff(a: str, b: str) -> float:
        return max(float((weights[a][k] - weights[b][k]).abs().max()) for k in weights[a])

    def losses(name: str) -> list[list[float]]:
        return [[e.train_loss, e.validation_loss] for e in read_results(args.work / name).epochs]

    params = sum(t.numel() for t in weights["p1"].values())
    memory = {}
    for n in (2, 3):
        per_process = [json.loads((args.work / f"mem-{n}" / f"mem-{r}.json").read_text()) for r in range(n)]
        sharded = [max(r["peak_delta"] for r in recs if r["what"].startswith("sharded")) for recs in per_process]
        gathered = [next(r["peak_delta"] for r in recs if r["what"] == "gathered checkpoint") for recs in per_process]
        memory[f"{n} processes"] = {
            "sharded_checkpoint_peak_delta_bytes_per_process": sharded,
            "gathered_checkpoint_peak_delta_bytes_per_process": gathered,
            "largest_sharded_over_largest_gathered": round(max(sharded) / max(gathered), 3),
            "sharded_checkpoint_seconds": [max(r["seconds"] for r in recs if r["what"].startswith("sharded"))
                                           for recs in per_process],
            "gathered_checkpoint_seconds": next(r["seconds"] for r in per_process[0] if r["what"] == "gathered checkpoint"),
            "gathered_checkpoint_file_bytes": next(r["bytes"] for r in per_process[0]
                                                   if r["what"] == "gathered checkpoint bytes"),
        }
    result = {
        "benchmark": "full fine-tuning under FSDP on CPU processes (gloo): losses, kill and resume, checkpoint memory",
        "model": f"GPT-2 shape, {args.layers} blocks x {args.width} wide, 50257-token vocabulary, random weights",
        "trained_parameters": params,
        "state_bytes": {"weights": params * 4, "adamw_moments": params * 8},
        "rows": "24 E2E training rows, batches of 6, 2 epochs = 8 steps; checkpoint every 3 steps and each epoch",
        "torch": torch.__version__,
        "losses_train_validation_per_epoch": {name: losses(name) for name in weights},
        "max_abs_weight_diff": {
            "FSDP 2 vs 1 process": max_diff("p2", "p1"), "FSDP 3 vs 1 process": max_diff("p3", "p1"),
            "killed at step 3, resumed on 2 vs uninterrupted FSDP 2": max_diff("resumed-on-2", "p2"),
            "killed at step 3 (2 processes), resumed on 3 vs uninterrupted FSDP 2": max_diff("resumed-on-3", "p2"),
            "killed at step 3 (2 processes), resumed on 3 vs uninterrupted FSDP 3": max_diff("resumed-on-3", "p3"),
        },
        "resharding_warning": "written by 2 processes and this run has 3" in "".join(
            (args.work / "resumed-on-3" / "train.log").read_text()),
        "checkpoint_memory": memory,
        "wall_s": seconds,
        "threads_per_process": int(os.environ.get("OMP_NUM_THREADS", "1")),
        "command": "PYTHONPATH=. python scripts/bench_fsdp.py" + (
            f" --layers {args.layers} --width {args.width}" if (args.layers, args.width) != (4, 512) else ""),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
