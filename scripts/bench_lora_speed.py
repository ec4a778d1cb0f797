"""Benchmark: lora-ft's LoRA against peft's LoRA on the same model and targets (training step and merged inference).

    python scripts/bench_lora_speed.py [--model gpt2-medium] [--layers 4] [--batch 8] [--seq 128] [--steps 20] [--out bench/lora_speed.json]

Both adapt GPT-2's fused `c_attn` projection: lora-ft with separate q and v updates (the paper's model), peft with its one
shared update over q, k and v (`target_modules=["c_attn"]`), the closest peft offers. A random-weight model of the given
shape (fewer blocks with --layers, to fit a CPU) is used: speed does not depend on the weights' values.
Writes median step times (ms) and the ratio lora-ft / peft to the JSON file; nothing is asserted here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _time_pair(fns: dict, steps: int, warmup: int = 3) -> dict[str, float]:
    """Median ms per call of each function, the calls interleaved so that drift in machine load hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns.items())
    for _ in range(steps):
        order.reverse()  # each goes first half of the time: no advantage from running just after the other
        for name, fn in order:
            _sync()
            start = time.perf_counter()
            fn()
            _sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1000 for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2-medium")
    parser.add_argument("--layers", type=int, default=4, help="blocks to build (the full model with 0)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default="bench/lora_speed.json")
    args = parser.parse_args()

    import peft

    from lora_ft.config import config_from_dict
    from lora_ft.build import adapted_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    overrides = {"n_layer": args.layers} if args.layers else {}
    model_section = {"name_or_path": args.model, "random_init": True, "config_overrides": overrides}
    cfg = config_from_dict({
        "model": model_section, "task": {"name": "e2e"},
        "method": {"name": "lora", "rank": args.rank, "alpha": 32, "dropout": 0.1, "targets": ["q", "v"]},
    })
    torch.manual_seed(0)
    ours = adapted_model(cfg).model.to(device)
    torch.manual_seed(0)
    base = adapted_model(config_from_dict({**cfg.to_dict(), "method": {"name": "ft"}, "output": None})).model
    theirs = peft.get_peft_model(
        base, peft.LoraConfig(r=args.rank, lora_alpha=32, lora_dropout=0.1, target_modules=["c_attn"], fan_in_fan_out=True)
    ).to(device)

    results: dict = {"device": str(device), "model": args.model, "layers": args.layers or ours.config.n_layer,
                     "batch": args.batch, "seq": args.seq, "rank": args.rank, "torch": torch.__version__,
                     "peft": peft.__version__}
    # The adapted projection alone (first block's c_attn), forward + backward: the only part where the two differ,
    # without the frozen rest of the model diluting the comparison.
    hidden = torch.randn(args.batch, args.seq, ours.config.n_embd, device=device)

    def layer_step(layer):
        def step():
            x = hidden.clone().requires_grad_(True)  # inside a model the input needs its gradient too
            layer(x).sum().backward()
        return step

    layers = {"lora_ft": ours.transformer.h[0].attn.c_attn, "peft": theirs.base_model.model.transformer.h[0].attn.c_attn}
    for name, ms in _time_pair({k: layer_step(v) for k, v in layers.items()}, 4 * args.steps).items():
        results[f"{name}_c_attn_fwd_bwd_ms"] = round(ms, 2)

    vocab = ours.config.vocab_size
    ids = torch.randint(0, vocab, (args.batch, args.seq), device=device)

    def train_step(model, optimizer):
        def step():
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return step

    steps = {}
    for name, model in (("lora_ft", ours), ("peft", theirs)):
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        steps[name] = train_step(model, optimizer)
    for name, ms in _time_pair(steps, args.steps).items():
        results[f"{name}_train_step_ms"] = round(ms, 2)
    from lora_ft.methods import build_method

    build_method("lora", cfg.method.config).merge(ours)
    merged_theirs = theirs.merge_and_unload()
    ours.eval()
    merged_theirs.eval()
    with torch.inference_mode():
        forwards = {"lora_ft": lambda: ours(input_ids=ids), "peft": lambda: merged_theirs(input_ids=ids)}
        for name, ms in _time_pair(forwards, args.steps).items():
            results[f"{name}_merged_forward_ms"] = round(ms, 2)
    results["train_step_ratio_lora_ft_over_peft"] = round(results["lora_ft_train_step_ms"] / results["peft_train_step_ms"], 3)
    results["c_attn_ratio_lora_ft_over_peft"] = round(
        results["lora_ft_c_attn_fwd_bwd_ms"] / results["peft_c_attn_fwd_bwd_ms"], 3
    )
    results["merged_forward_ratio_lora_ft_over_peft"] = round(
        results["lora_ft_merged_forward_ms"] / results["peft_merged_forward_ms"], 3
    )
    results["command"] = "python scripts/bench_lora_speed.py " + " ".join(sys.argv[1:])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
