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
            out.append((
                f"beam search, {data['model']} on {data['device']} (ms per MR)",
                f"{data['lora_ft_ms_per_mr']}", f"{data['hf_generate_ms_per_mr']} (transformers generate)",
                f"{data['speedup_lora_ft_over_hf']}x", command,
            ))
        elif name.startswith("training-"):
            where = f"GPT-2 M shape, {data['layers']} blocks, {data['device']}"
            out.append((
                f"LoRA step, real E2E batches of {data['batch']}, {where} (ms; completion tok/s)",
                f"{data['lora_ft_lora_step_ms']} ({data['lora_ft_lora_completion_tokens_per_s']})",
                f"{data['peft_lora_step_ms']} ({data['peft_lora_completion_tokens_per_s']}) (peft)",
                f"{data['speedup_lora_ft_over_peft']}x", command,
            ))
            out.append((
                "LoRA step, same batches, loss from all positions' logits (ms)",
                f"{data['lora_ft_lora_step_ms']}", f"{data['lora_ft_lora_full_logits_step_ms']} (padded reference)",
                f"{data['speedup_gathered_over_full_logits']}x", command,
            ))
            out.append((
                "full fine-tuning step, same batches (ms; completion tok/s)",
                f"{data['lora_ft_ft_step_ms']} ({data['lora_ft_ft_completion_tokens_per_s']})",
                f"{data['transformers_ft_step_ms']} ({data['transformers_ft_completion_tokens_per_s']}) (transformers loop)",
                f"{data['speedup_lora_ft_ft_over_transformers']}x", command,
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
