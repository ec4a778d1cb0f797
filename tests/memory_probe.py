"""Measure the peak memory of CPU training steps and print it beside lora_ft.memory's estimate (one JSON line).

    python tests/memory_probe.py lora|ft [BLOCKS BATCH LENGTH [gc] [bf16]]   (default 2 8 128)

gc: gradient checkpointing; bf16: float32 weights under bf16 autocast (training.mixed_precision bf16, on the CPU).

Run in a fresh process (tests/test_memory.py does) because the measure is the process's peak resident set
(getrusage ru_maxrss, which the kernel keeps and which no allocator can hide), taken as a DELTA over a baseline read
after torch, transformers and lora_ft are imported and the batch is made, i.e. without the Python/torch runtime.
The test runs it with MALLOC_MMAP_THRESHOLD_=131072: glibc otherwise raises its mmap threshold as large blocks
are freed, and later tensors of up to 32 MB come from a heap it does not shrink, so the resident set would count
freed memory (measured: +30% on the LoRA config). tracemalloc would not see torch's tensors (allocated in C++), and torch keeps no CPU allocator statistics.
Large tensors are mmap'd by glibc and returned on free, so the resident set follows live tensors closely.
The steps are the trainer's (train.py): the LM head on completion positions (loss.py), the float32 loss, backward,
the configured optimizer's step, zero_grad(set_to_none=True). Every position is a completion token, so the estimate's
logits term (an upper bound) is exact here.
"""

from __future__ import annotations

import json
import ctypes
import sys


def probe(method: str, blocks: int = 2, batch: int = 8, length: int = 128, checkpointing: bool = False,
          autocast: bool = False) -> dict:
    import torch

    from lora_ft.build import adapted_model, count_for_config, enable_gradient_checkpointing, preflight
    from lora_ft.config import config_from_dict
    from lora_ft.loss import completion_loss, completion_positions
    from lora_ft.memory import estimate_training_memory
    from lora_ft.optim import build_optimizer

    method_cfg = {"name": "lora", "rank": 4, "alpha": 8, "targets": ["q", "v"]} if method == "lora" else {"name": "ft"}
    cfg = config_from_dict({
        # GPT-2 small's block (768 wide, 12 heads) x `blocks`; a 8192-word vocabulary keeps each step to about a second.
        "model": {"name_or_path": "gpt2", "random_init": True,
                  "config_overrides": {"n_layer": blocks, "n_embd": 768, "n_head": 12, "vocab_size": 8192}},
        "task": {"name": "e2e", "max_length": length},
        "method": method_cfg,
        "training": {"batch_size": batch, "label_smoothing": 0.0, "gradient_checkpointing": checkpointing,
                     "mixed_precision": "bf16" if autocast else "no"},
        "output": {"dir": "unused"},
    }, source="memory_probe")
    counts = count_for_config(cfg)
    estimate = estimate_training_memory(cfg, counts, preflight(cfg))
    torch.manual_seed(0)
    ids = torch.randint(0, 8192, (cfg.training.batch_size, cfg.task.max_length))
    torch.set_num_threads(1)
    baseline = _rss("VmRSS")

    model = adapted_model(cfg).model
    if checkpointing:
        enable_gradient_checkpointing(model)
    model.train()
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], cfg.training)
    after_build = _rss("VmRSS")
    _reset_peak()  # building the model (random init) peaks on its own; the training steps are what is measured
    for _ in range(2):  # the second step runs with the optimizer state allocated
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):  # as Accelerate's bf16 on the CPU
            with completion_positions(model, ids) as (targets, _rows):
                logits = model(input_ids=ids, use_cache=False).logits
            loss_sum, tokens = completion_loss(logits, targets, 0.0)
        (loss_sum / tokens).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del logits, loss_sum
    peak = _rss("VmHWM")
    return {"method": method, "checkpointing": checkpointing, "autocast": autocast, "measured": peak - baseline, "weights_measured": after_build - baseline,
            "estimate": estimate}


def _rss(field: str) -> int:
    """VmRSS (resident now) or VmHWM (peak resident since the last reset) of this process, in bytes."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    # Hand freed heap back to the kernel first, then reset VmHWM to the current resident set (Linux >= 4.0).
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


if __name__ == "__main__":
    numbers, flags = sys.argv[2:5], sys.argv[5:]
    print(json.dumps(probe(sys.argv[1], *map(int, numbers), checkpointing="gc" in flags, autocast="bf16" in flags)))
