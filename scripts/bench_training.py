"""Benchmark: training steps on real E2E batches, lora-ft against its peers (peft's LoRA, a plain transformers loop).

    python scripts/bench_training.py [--layers 4] [--batch 8] [--batches 6] [--rank 4] [--device cpu|cuda]
                                     [--runners NAME,...] [--threads N] [--out bench/training-<device>.json]

Batches: the first `--batches` x `--batch` rows of the E2E validation split (MR + reference, GPT-2 tokenised,
right-padded per batch as lora-ft's collator does: real lengths, not a fixed 8 x 128). Model: GPT-2 M's shape with
random weights (speed does not depend on the weights' values), `--layers` blocks to fit a CPU (0: all 24).
Steps timed, alternately, on the same batches, each with AdamW:
- lora_ft_lora:  lora-ft LoRA (q, v) as it trains by default: the batch packed into rows without padding
  (lora_ft/packing.py), LM head and loss on completion positions only (lora_ft/loss.py);
- lora_ft_lora_padded: the same on the padded batch (training.packing: off);
- lora_ft_lora_full_logits: the padded batch with the loss from every position's logits (the reference);
- peft_lora: peft LoRA on c_attn, `model(..., labels=...).loss` (transformers' loss over all positions);
- lora_ft_ft / lora_ft_ft_padded / transformers_ft: full fine-tuning, packed and padded, vs the plain transformers loop.
All of lora-ft's variants give the same loss and gradients (tests/test_loss.py, tests/test_packing.py).
Writes median ms per step, completion tokens per second (the tokens that carry loss) and the ratios.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def e2e_batches(count: int, size: int) -> list[dict[str, torch.Tensor]]:
    from transformers import AutoTokenizer

    from lora_ft.data import CausalLMCollator, encode_example
    from lora_ft.tasks.base import Example

    tokenizer = AutoTokenizer.from_pretrained(
        str(ROOT / ".." / "shared" / "data" / "gpt2-tokenizer"), eos_token="<|endoftext|>"
    )
    lines = (ROOT / ".." / "shared" / "data" / "e2e" / "valid.txt").read_text(encoding="utf-8").splitlines()
    features = []
    for line in lines[: count * size]:
        mr, ref = line.split("||", 1)
        example = Example(context=mr.strip(), target=" " + ref.strip())
        features.append(encode_example(tokenizer, example, separator_eos=True, max_length=512))
    collate = CausalLMCollator(tokenizer.eos_token_id)
    return [collate(features[i : i + size]) for i in range(0, len(features), size)]


# speedup name -> (slower runner, faster runner): the first's median step time over the second's
SPEEDUPS = {
    "speedup_lora_ft_over_peft": ("peft_lora", "lora_ft_lora"),
    "speedup_packed_over_padded": ("lora_ft_lora_padded", "lora_ft_lora"),
    "speedup_gathered_over_full_logits": ("lora_ft_lora_full_logits", "lora_ft_lora_padded"),
    "speedup_lora_ft_ft_over_transformers": ("transformers_ft", "lora_ft_ft"),
    "speedup_ft_packed_over_padded": ("lora_ft_ft_padded", "lora_ft_ft"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the batches, alternating the runners")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runners", default="", help="comma-separated subset of the runners below (default: all)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import peft

    from lora_ft.build import adapted_model
    from lora_ft.config import config_from_dict
    from lora_ft.loss import completion_loss, completion_positions, full_logits_loss
    from lora_ft.packing import packing_for, padded

    device = torch.device(args.device)
    overrides = {"n_layer": args.layers} if args.layers else {}
    base_cfg = {"model": {"name_or_path": "gpt2-medium", "random_init": True, "config_overrides": overrides},
                "task": {"name": "e2e"}}

    def build(method: dict):
        torch.manual_seed(0)
        return adapted_model(config_from_dict({**base_cfg, "method": method})).model.to(device).train()

    # Each model built once, when a chosen runner first needs it (the LoRA variants share one model, as do lora-ft's FT).
    @functools.cache
    def ours_lora():
        return build({"name": "lora", "rank": args.rank, "alpha": 32, "dropout": 0.1, "targets": ["q", "v"]})

    @functools.cache
    def theirs_lora():
        config = peft.LoraConfig(r=args.rank, lora_alpha=32, lora_dropout=0.1, target_modules=["c_attn"],
                                 fan_in_fan_out=True)
        return peft.get_peft_model(build({"name": "ft"}), config).train()

    @functools.cache
    def ft_ours():
        return build({"name": "ft"})

    @functools.cache
    def ft_theirs():
        return build({"name": "ft"})

    batches = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()}
               for b in e2e_batches(args.batches, args.batch)]

    def lora_ft_step(model, gathered: bool, packed: bool = False):
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        packing = packing_for(model, "auto")  # as the trainer packs
        assert packing.active or not packed, packing.reason

        def step(batch):
            if gathered:
                layout = packing(batch) if packed else padded(batch)
                with completion_positions(model, layout.labels) as (targets, _rows):
                    logits = model(**layout.inputs).logits
                loss_sum, tokens = completion_loss(logits, targets, 0.1)
            else:
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                loss_sum, tokens = full_logits_loss(logits, batch["labels"], 0.1)
            (loss_sum / tokens).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return step

    def transformers_step(model):
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

        def step(batch):
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return step

    runners = {
        "lora_ft_lora": lambda: lora_ft_step(ours_lora(), True, packed=True),
        "lora_ft_lora_padded": lambda: lora_ft_step(ours_lora(), True),
        "lora_ft_lora_full_logits": lambda: lora_ft_step(ours_lora(), False),
        "peft_lora": lambda: transformers_step(theirs_lora()),
        "lora_ft_ft": lambda: lora_ft_step(ft_ours(), True, packed=True),
        "lora_ft_ft_padded": lambda: lora_ft_step(ft_ours(), True),
        "transformers_ft": lambda: transformers_step(ft_theirs()),
    }
    chosen = args.runners.split(",") if args.runners else list(runners)
    unknown = sorted(set(chosen) - set(runners))
    if unknown:
        parser.error(f"unknown runners {unknown}; choose from {', '.join(runners)}")
    runners = {name: runners[name]() for name in chosen}  # builds only the models the chosen runners use
    for fn in runners.values():  # warm-up
        fn(batches[0])
    times: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners.items())
    for _ in range(args.rounds):
        for batch in batches:
            order.reverse()
            for name, fn in order:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                fn(batch)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
    completion_tokens = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    positions = sum(b["labels"].numel() for b in batches)
    mean_step_tokens = completion_tokens / len(batches)
    report = {
        "benchmark": "training step on real E2E batches (GPT-2 M shape, random weights)",
        "device": args.device, "layers": args.layers or 24, "batch": args.batch, "batches": args.batches,
        "rank": args.rank, "torch": torch.__version__, "peft": peft.__version__,
        "completion_token_share": round(completion_tokens / positions, 3),
        "padding_share": round(1 - sum(int(b["attention_mask"].sum()) for b in batches) / positions, 3),
        "completion_tokens_per_step": round(mean_step_tokens, 1),
    }
    for name, values in times.items():
        ms = 1000 * statistics.median(values)
        report[f"{name}_step_ms"] = round(ms, 1)
        report[f"{name}_completion_tokens_per_s"] = round(mean_step_tokens / (ms / 1000), 1)
    report["threads"] = torch.get_num_threads()
    for ratio, (slow, fast) in SPEEDUPS.items():  # those whose two runners ran
        if slow in times and fast in times:
            report[ratio] = round(report[f"{slow}_step_ms"] / report[f"{fast}_step_ms"], 2)
    report["command"] = "python scripts/bench_training.py " + " ".join(sys.argv[1:])
    out = args.out or ROOT / "bench" / f"training-{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
