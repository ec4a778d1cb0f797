"""Render the README's performance table from bench/*.json (written by scripts/bench.sh).

    python scripts/bench_table.py              # print the markdown table
    python scripts/bench_table.py --readme README.md   # replace the text between the bench markers in README.md

The README holds the table between the lines `<!-- bench:start -->` and `<!-- bench:end -->`; nothing else changes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def rows(bench: Path) -> list[tuple[str, str, str, str, str]]:
    """(what, lora-ft, peer, ratio, command) for every benchmark file found."""
    out = []
    for path in sorted(bench.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        name, command = path.stem, data.get("command", "")
        if name == "scoring":
            official = data.get("official_wall_s_median")
            out.append((
                f"score 630 E2E MRs, 5 metrics (wall s; CPU s {data['lora_ft_cpu_s_median']})",
                f"{data['lora_ft_wall_s_median']}", f"{official} (official scorer)" if official else "n/a",
                f"{data['ratio_official_over_lora_ft']}x" if official else "", command,
            ))
        elif name.startswith("decoding-"):
            cpu = data.get("cpu_ms_per_mr", {})
            out.append((
                f"beam search, {data['model']} on {data['device']} (ms per MR, wall; CPU ms "
                f"{cpu.get('lora_ft')} vs {cpu.get('hf_generate')}: {data.get('cpu_speedup_lora_ft_over_hf')}x)",
                f"{data['lora_ft_ms_per_mr']}", f"{data['hf_generate_ms_per_mr']} (transformers generate)",
                f"{data['speedup_lora_ft_over_hf']}x", command,
            ))
            if "lora_ft_torch_linear_ms_per_mr" in data:  # the search alone, on the kernel generate runs on
                out.append((
                    f"beam search, {data['model']} on {data['device']}, lora-ft with PyTorch's own linear kernel "
                    f"(ms per MR, wall; outputs equal with and without oneDNN: "
                    f"{data['outputs_equal_with_and_without_prepacked_linears']})",
                    f"{data['lora_ft_torch_linear_ms_per_mr']}",
                    f"{data['hf_generate_ms_per_mr']} (transformers generate)",
                    f"{data['speedup_lora_ft_torch_linear_over_hf']}x", command,
                ))
        elif name.startswith("training-"):
            where = f"GPT-2 M shape, {data['layers']} blocks, {data['device']}"
            step = f"real E2E batches of {data['batch']}, {where}"
            pairs = [  # (what, ours, peer, peer's label, ratio key)
                (f"LoRA step, {step} (ms; completion tok/s)", "lora_ft_lora", "peft_lora", "peft",
                 "speedup_lora_ft_over_peft"),
                ("LoRA step packed vs the same step padded (ms)", "lora_ft_lora", "lora_ft_lora_padded",
                 "padded reference", "speedup_packed_over_padded"),
                ("LoRA step padded, LM head on completion positions vs all positions' logits (ms)",
                 "lora_ft_lora_padded", "lora_ft_lora_full_logits", "all logits", "speedup_gathered_over_full_logits"),
                ("full fine-tuning step, same batches (ms; completion tok/s)", "lora_ft_ft", "transformers_ft",
                 "transformers loop", "speedup_lora_ft_ft_over_transformers"),
            ]
            for what, ours, peer, label, ratio in pairs:
                if ratio not in data:
                    continue
                out.append((
                    what,
                    f"{data[f'{ours}_step_ms']} ({data[f'{ours}_completion_tokens_per_s']})",
                    f"{data[f'{peer}_step_ms']} ({data[f'{peer}_completion_tokens_per_s']}) ({label})",
                    f"{data[ratio]}x", command,
                ))
        elif name == "lora_speed":
            out.append((
                f"LoRA step, fixed {data['batch']} x {data['seq']} batch, {data['layers']} blocks (ms)",
                f"{data['lora_ft_train_step_ms']}", f"{data['peft_train_step_ms']} (peft)",
                f"{round(1 / data['train_step_ratio_lora_ft_over_peft'], 2)}x", command,
            ))
    return out


def table(bench: Path) -> str:
    lines = ["| benchmark | lora-ft | peer | lora-ft speed-up | command |", "|---|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} | `{e}` |" for a, b, c, d, e in rows(bench)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=ROOT / "bench")
    parser.add_argument("--readme", type=Path, default=None)
    args = parser.parse_args()
    text = table(args.bench)
    if args.readme is None:
        print(text, end="")
        return
    readme = args.readme.read_text(encoding="utf-8")
    if START not in readme or END not in readme:
        raise SystemExit(f"{args.readme} has no {START} ... {END} block; add those two lines where the table goes")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    args.readme.write_text(f"{head}{START}\n{text}{END}{tail}", encoding="utf-8")
    print(f"updated the performance table in {args.readme}")


if __name__ == "__main__":
    main()
