"""Benchmark: training steps on real E2E batches, lora-ft against its peers (peft's LoRA, a plain transformers loop).

    python scripts/bench_training.py [--layers 4] [--batch 8] [--batches 6] [--rank 4] [--device cpu|cuda]
                                     [--out bench/training-<device>.json]

Batches: the first `--batches` x `--batch` rows of the E2E validation split (MR + reference, GPT-2 tokenised,
right-padded per batch as lora-ft's collator does: real lengths, not a fixed 8 x 128). Model: GPT-2 M's shape with
random weights (speed does not depend on the weights' values), `--layers` blocks to fit a CPU (0: all 24).
Steps timed, alternately, on the same batches, each with AdamW:
- lora_ft_lora:  lora-ft LoRA (q, v), LM head and loss on completion positions only (lora_ft/loss.py);
- lora_ft_lora_full_logits: the same model with the loss from every position's logits (the padded reference);
- peft_lora: peft LoRA on c_attn, `model(..., labels=...).loss` (transformers' loss over all positions);
- lora_ft_ft / transformers_ft: full fine-tuning, lora-ft's loss vs the plain transformers loop.
Writes median ms per step, completion tokens per second and the ratios.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the batches, alternating the runners")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import peft

    from lora_ft.build import adapted_model
    from lora_ft.config import config_from_dict
    from lora_ft.loss import completion_loss, completion_positions, full_logits_loss

    device = torch.device(args.device)
    overrides = {"n_layer": args.layers} if args.layers else {}
    base_cfg = {"model": {"name_or_path": "gpt2-medium", "random_init": True, "config_overrides": overrides},
                "task": {"name": "e2e"}}

    def build(method: dict):
        torch.manual_seed(0)
        return adapted_model(config_from_dict({**base_cfg, "method": method})).model.to(device).train()

    lora = {"name": "lora", "rank": args.rank, "alpha": 32, "dropout": 0.1, "targets": ["q", "v"]}
    ours_lora = build(lora)
    theirs_lora = peft.get_peft_model(
        build({"name": "ft"}), peft.LoraConfig(r=args.rank, lora_alpha=32, lora_dropout=0.1, target_modules=["c_attn"],
                                               fan_in_fan_out=True)
    ).train()
    ft_ours, ft_theirs = build({"name": "ft"}), build({"name": "ft"})
    batches = [{k: v.to(device) for k, v in b.items()} for b in e2e_batches(args.batches, args.batch)]

    def lora_ft_step(model, gathered: bool):
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

        def step(batch):
            if gathered:
                with completion_positions(model, batch["labels"]) as (targets, _rows):
                    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
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
        "lora_ft_lora": lora_ft_step(ours_lora, True),
        "lora_ft_lora_full_logits": lora_ft_step(ours_lora, False),
        "peft_lora": transformers_step(theirs_lora),
        "lora_ft_ft": lora_ft_step(ft_ours, True),
        "transformers_ft": transformers_step(ft_theirs),
    }
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
    }
    for name, values in times.items():
        ms = 1000 * statistics.median(values)
        report[f"{name}_step_ms"] = round(ms, 1)
        report[f"{name}_completion_tokens_per_s"] = round(mean_step_tokens / (ms / 1000), 1)
    report["speedup_lora_ft_over_peft"] = round(report["peft_lora_step_ms"] / report["lora_ft_lora_step_ms"], 2)
    report["speedup_gathered_over_full_logits"] = round(
        report["lora_ft_lora_full_logits_step_ms"] / report["lora_ft_lora_step_ms"], 2
    )
    report["speedup_lora_ft_ft_over_transformers"] = round(report["transformers_ft_step_ms"] / report["lora_ft_ft_step_ms"], 2)
    report["command"] = "python scripts/bench_training.py " + " ".join(sys.argv[1:])
    out = args.out or ROOT / "bench" / f"training-{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
