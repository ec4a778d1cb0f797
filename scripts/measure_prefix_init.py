"""Step-0 loss of a prefix run against the base model's: how far an untrained prefix moves the model (issue 9).

    python scripts/measure_prefix_init.py configs/mini/table4/mnli_prelayer.yaml --texts "" " Answer:"
    python scripts/measure_prefix_init.py configs/mini/table4/mnli_prelayer.yaml --lengths 4 4 --texts "" " Answer:"

Loads the config's model once; for each init text ("" = randomly drawn vocabulary tokens) applies the config's prefix
method to a copy, starts it as that text's tokens, and prints the mean completion loss (label smoothing 0.1, as the mini
configs' E2E recipe; the issue's figures use it too) on the first 8 training rows, beside the base model's.
"""

from __future__ import annotations

import argparse
import copy

import torch

from lora_ft.config import load_config
from lora_ft.data import CausalLMCollator, build_train_dataset
from lora_ft.methods import build_method
from lora_ft.models import architecture_for
from lora_ft.models.loading import load_model, load_tokenizer
from lora_ft.tasks import get_task
from lora_ft.train import completion_loss, virtual_tokens_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--texts", nargs="+", default=[""], help='init texts; "" = random vocabulary tokens')
    parser.add_argument("--lengths", nargs=2, type=int, metavar=("L_P", "L_I"), help="override the prefix/infix lengths")
    args = parser.parse_args()
    overrides = ["task.max_train_examples=8", "task.train_slice=null"]
    if args.lengths:
        overrides += [f"method.prefix_length={args.lengths[0]}", f"method.infix_length={args.lengths[1]}"]
    cfg = load_config(args.config, overrides)
    tokenizer, base = load_tokenizer(cfg.model), load_model(cfg.model).eval()
    arch, task = architecture_for(base.config), get_task(cfg.task)

    def loss(model, method) -> float:
        data = build_train_dataset(tokenizer, task, "train", virtual_tokens_for(method, model), 4096)
        batch = CausalLMCollator(tokenizer.pad_token_id)([data[i] for i in range(min(8, len(data)))])
        with torch.no_grad():
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            total, count = completion_loss(out.logits, batch["labels"], 0.1)
        return float(total / count)

    print(f"{args.config}: base model {loss(base, build_method('ft', load_config(args.config, ['method={name: ft}']).method.config)):.3f}")
    for text in args.texts:
        model = copy.deepcopy(base)
        method = build_method(cfg.method.name, cfg.method.config)
        method.apply(model, arch)
        if text:
            method.initialise(tokenizer.encode(text, add_special_tokens=False),
                              filler=tokenizer.encode("\n", add_special_tokens=False))  # as lora_ft/build.py does
        label = repr(text) if text else "random vocabulary tokens"
        print(f"{args.config}: {cfg.method.name} {method.size_label()} from {label}: {loss(model, method):.3f}", flush=True)


if __name__ == "__main__":
    main()
