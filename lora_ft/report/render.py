"""Render table rows as markdown, LaTeX, JSON or CSV (the texts of a cell, the footnotes, each format's escaping)."""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from lora_ft.report.cells import COLUMNS, LAYOUT_COLUMNS, PRIMARY_METRIC, Cell
from lora_ft.report.intervals import LEVEL
from lora_ft.report.learning_rates import row_record, row_text
from lora_ft.report.notes import TableContext, footnotes
from lora_ft.report.paper_numbers import GPT2_MODELS, TASKS_TABLE4
from lora_ft.report.rows import Row
from lora_ft.report.runs import canonical_json

CI_HEADER = f"{LEVEL:.0%} CI"


def has_interval(key: str) -> bool:
    """Whether a column gets a CI column beside it: its task's primary metric."""
    return PRIMARY_METRIC.get(COLUMNS[key].task) == key


def interval_text(cell: Cell, decimals: int) -> str:
    """"[55.1, 64.0]", "n/a" (the row's notes say why) or "-" (no score to bound)."""
    if cell.interval is not None:
        return f"[{cell.interval.low:.{decimals}f}, {cell.interval.high:.{decimals}f}]"
    return "n/a" if cell.interval_reason else "-"


def format_mean_std(mean: float, std: float | None, decimals: int, *, pm: str = "±") -> str:
    """Compact paper style: 70.4±.1 (the ± drops its leading zero), 67.3±1.2, or 70.4 for one seed."""
    text = f"{mean:.{decimals}f}"
    if std is None:
        return text
    spread = f"{std:.{decimals}f}"
    if spread.startswith("0.") and decimals > 0:
        spread = spread[1:]
    return f"{text}{pm}{spread}"


def format_delta(delta: float, decimals: int) -> str:
    """Signed difference; a difference that rounds to zero prints as +0.0, never -0.0."""
    rounded = round(delta, decimals)
    return f"{(rounded if rounded != 0 else 0.0):+.{decimals}f}"


def format_trainable(counts: Sequence[int], not_applicable: bool = False) -> str:
    """Measured counts in millions as the paper prints them (0.39M); exact below 10,000; "n/a" for a refused row."""
    if not counts:
        return "n/a" if not_applicable else "?"
    return " / ".join(f"{n / 1e6:.2f}M" if n >= 10_000 else f"{n:,}" for n in counts)


@dataclass
class _Cells:
    """Plain texts of one row, shared by markdown and LaTeX (which add their own markup)."""

    value: str | None  # mean±std (None if empty)
    suffix: str  # " (n=2)" or ""
    reason: str | None
    best: bool
    paper: str  # "70.4±.1 (-0.3)" or ""


def _cell_texts(row: Row, key: str, decimals: int, pm: str) -> _Cells:
    cell = row.cells[key]
    mean = cell.mean
    value = None if mean is None else format_mean_std(mean, cell.std, decimals, pm=pm)
    suffix = f" (n={cell.n})" if mean is not None and cell.n < cell.n_runs else ""
    paper = ""
    if row.paper is not None and key in row.paper.row.scores:
        ref = row.paper.row.scores[key]
        paper = format_mean_std(ref, row.paper.row.stds.get(key), decimals, pm=pm)
        if mean is not None:
            paper += f" ({format_delta(mean - ref, decimals)})"
    return _Cells(value, suffix, cell.reason, cell.best, paper)


def _reason_text(reason: str | None, shown: set[str]) -> str:
    """An empty cell's reason in full the first time in a row, then only its head ("failed: CUDA OOM" -> "failed")."""
    reason = reason or ""
    if reason in shown:
        return reason.split(":", 1)[0]
    shown.add(reason)
    return reason


def _seeds_text(row: Row, layout: str) -> str:
    def seeds(task: str) -> str:
        if task in row.not_applicable:
            return "n/a"
        return str(len(row.groups[task].runs_by_seed())) if task in row.groups else "-"  # seeds, not runs

    return seeds(row.first.task) if layout != "table4" else " / ".join(seeds(t) for t in TASKS_TABLE4)


def _trainable_text(row: Row) -> str:
    if row.untrained:
        return "0"
    return format_trainable(row.trainable, not any(g.runs for g in row.groups.values()) and bool(row.refused))


def _markdown_escape(text: str) -> str:
    return re.sub(r"([\\|*_`])", r"\\\1", text.replace("\n", " "))


def render_markdown(rows: list[Row], ctx: TableContext, decimals: Mapping[str, int]) -> str:
    layout = ctx.layout
    header = ["Model & Method", "# Trainable", "Seeds" if layout != "table4" else "Seeds (W / M / S)"]
    align = ["---", "---:", "---:"]
    for key in LAYOUT_COLUMNS[layout]:
        header += [COLUMNS[key].header, *([CI_HEADER] if has_interval(key) else []), ctx.paper_header]
        align += ["---:", *(["---:"] if has_interval(key) else []), "---:"]
    header += ["LR", "Paper row", "Notes"]
    align += ["---", "---", "---"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    for row in rows:
        cells = [_markdown_escape(row.label), _trainable_text(row), _seeds_text(row, layout)]
        shown: set[str] = set()
        for key in LAYOUT_COLUMNS[layout]:
            texts = _cell_texts(row, key, decimals[key], "±")
            if texts.value is None:
                cells.append(_markdown_escape(_reason_text(texts.reason, shown)))
            else:
                cells.append((f"**{texts.value}**" if texts.best else texts.value) + texts.suffix)
            if has_interval(key):
                cells.append(interval_text(row.cells[key], decimals[key]))
            cells.append(texts.paper)
        cells.append(_markdown_escape(row_text(row.groups)))
        cells.append(_markdown_escape(row.paper.label) if row.paper else "no matching row")
        cells.append(_markdown_escape("; ".join(row.notes)))
        lines.append("| " + " | ".join(cells) + " |")
    notes = footnotes(rows, ctx)
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {_markdown_escape(n)}" for n in notes) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
}
_LATEX_UNICODE = {"±": r"$\pm$", "Δ": r"$\Delta$", "−": "-", "–": "--", "—": "---", "…": "..."}


def latex_escape(text: str) -> str:
    """Escape text for LaTeX; the result is plain ASCII (other characters are transliterated or become '?')."""
    out = []
    for char in text:
        if char in _LATEX_SPECIAL:
            out.append(_LATEX_SPECIAL[char])
        elif char in _LATEX_UNICODE:
            out.append(_LATEX_UNICODE[char])
        elif ord(char) < 128:
            out.append(char)
        else:
            ascii_form = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode("ascii")
            out.append(latex_escape(ascii_form) if ascii_form else "?")
    return "".join(out)


def _latex_label(text: str) -> str:
    """Escape, turning "Adapter^H" / "FT^Top2" into superscripts as the paper typesets them."""
    parts = re.split(r"\^(\w+)", text)
    out = []
    for i, part in enumerate(parts):
        out.append(latex_escape(part) if i % 2 == 0 else r"\textsuperscript{" + latex_escape(part) + "}")
    return "".join(out)


def render_latex(rows: list[Row], ctx: TableContext, decimals: Mapping[str, int]) -> str:
    layout = ctx.layout
    pm = r"$\pm$"
    keys = LAYOUT_COLUMNS[layout]
    spec = "lrr" + "".join("rrr" if has_interval(k) else "rr" for k in keys) + "lll"
    header = ["Model \\& Method", r"\# Trainable", "Seeds" if layout != "table4" else "Seeds (W / M / S)"]
    for key in keys:
        header += [latex_escape(COLUMNS[key].header), *([latex_escape(CI_HEADER)] if has_interval(key) else []),
                   latex_escape(ctx.paper_header)]
    header += ["LR", "Paper row", "Notes"]
    lines = [
        "% Generated by lora-ft (lora_ft.report.table); needs no extra LaTeX packages.",
        "% If it is too wide, wrap the tabular in \\resizebox{\\textwidth}{!}{...} (package graphicx).",
        r"\begin{table}[ht]",
        r"\centering",
        r"\scriptsize",
        r"\begin{tabular}{" + spec + "}",
        r"\hline",
        " & ".join(header) + r" \\",
        r"\hline",
    ]
    for row in rows:
        cells = [_latex_label(row.label), latex_escape(_trainable_text(row)), latex_escape(_seeds_text(row, layout))]
        shown: set[str] = set()
        for key in keys:
            texts = _cell_texts(row, key, decimals[key], pm)
            if texts.value is None:
                cells.append(latex_escape(_reason_text(texts.reason, shown)))
            else:
                value = r"\textbf{" + texts.value + "}" if texts.best else texts.value
                cells.append(value + latex_escape(texts.suffix))
            if has_interval(key):
                cells.append(latex_escape(interval_text(row.cells[key], decimals[key])))
            cells.append(texts.paper)
        cells.append(latex_escape(row_text(row.groups)))
        cells.append(_latex_label(row.paper.label) if row.paper else "no matching row")
        cells.append(latex_escape("; ".join(row.notes)))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\hline", r"\end{tabular}"]
    caption = {"table3": "GPT-2 on E2E (Table 3 layout)", "table4": "WikiSQL, MNLI-m, SAMSum (Table 4 layout)"}.get(
        layout, f"A custom task ({layout.removeprefix('custom-')})")
    if layout == "table3" and ctx.compare_with is not None and any(r.paper and not r.paper.same_model for r in rows):
        caption = f"E2E (Table 3 layout); paper columns: {GPT2_MODELS[ctx.compare_with]}'s numbers, a different model"
    lines.append(r"\caption{" + latex_escape(caption) + "}")
    notes = footnotes(rows, ctx)
    lines.append(r"\par\smallskip\raggedright " + r" \\ ".join(latex_escape(n) for n in notes))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def _cell_record(row: Row, key: str) -> dict[str, Any]:
    cell = row.cells[key]
    paper = row.paper.row.scores.get(key) if row.paper else None
    mean = cell.mean
    return {
        "mean": mean,
        "std": cell.std,
        "n": cell.n,
        "runs": cell.n_runs,
        "values": [
            {"run_dir": str(s.run_dir), "seed": s.seed, "value": s.value, "epoch": s.epoch, "split": s.split}
            for s in cell.scores
        ],
        "reason": cell.reason,
        "problems": cell.problems,
        "best": cell.best,
        "paper": paper,
        "paper_std": row.paper.row.stds.get(key) if row.paper else None,
        "delta": None if paper is None or mean is None else mean - paper,
        "interval": None if cell.interval is None else {
            "low": cell.interval.low, "high": cell.interval.high, "level": LEVEL, "items": cell.interval.items,
            "seeds": cell.interval.seeds, "resamples": cell.interval.resamples,
            "method": "percentile bootstrap over the scored items, seeds pooled"},
        "interval_reason": cell.interval_reason,
    }


def _row_record(row: Row, layout: str) -> dict[str, Any]:
    return {
        "label": row.label,
        "model": row.first.model,
        "method": row.first.method,
        "trainable": row.trainable,
        "untrained": row.untrained,
        "runs": {task: [str(r.run_dir) for r in g.runs] for task, g in row.groups.items()},
        "learning_rate": row_record(row.groups),
        "not_applicable": {task: {"config": e.config_path, "reason": e.reason, "short": e.short}
                           for task, e in row.not_applicable.items()},
        "paper_row": row.paper.row.label if row.paper else None,
        "paper_row_label": row.paper.label if row.paper else None,
        "paper_from_prior_work": row.paper.row.from_prior_work if row.paper else None,
        "paper_same_model": row.paper.same_model if row.paper else None,
        "paper_trainable": row.paper.row.trainable_printed if row.paper else None,
        "cells": {key: _cell_record(row, key) for key in LAYOUT_COLUMNS[layout]},
        "notes": row.notes,
    }


def render_json(rows: list[Row], ctx: TableContext) -> str:
    layout = ctx.layout
    doc = {
        "layout": layout,
        "epoch": ctx.epoch,
        "split": ctx.split,
        "compare_with": ctx.compare_with,
        "columns": [
            {"key": k, "header": COLUMNS[k].header, "task": COLUMNS[k].task, "decimals": COLUMNS[k].decimals}
            for k in LAYOUT_COLUMNS[layout]
        ],
        "rows": [_row_record(row, layout) for row in rows],
        "skipped": [{"path": str(s.path), "reason": s.reason} for s in ctx.skipped],
        "not_applicable_tasks": {e.task: e.reason for e in ctx.whole_task},
        "footnotes": footnotes(rows, ctx),
    }
    return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _csv_number(value: float | int | None) -> str:
    return "" if value is None else repr(value)


def render_csv(rows: list[Row], layout: str) -> str:
    keys = LAYOUT_COLUMNS[layout]
    header = ["row", "model", "method", "trainable", "runs"]
    for key in keys:
        header += [f"{key}_{part}" for part in ("mean", "std", "n", "values", "reason", "best", "paper", "paper_std", "delta")]
        header += [f"{key}_ci_low", f"{key}_ci_high"] if has_interval(key) else []
    header += ["lr", "paper_row", "notes"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        record = _row_record(row, layout)
        line = [
            row.label,
            row.first.model,
            canonical_json(row.first.method),
            ";".join(str(n) for n in row.trainable),
            ";".join(str(len(g.runs)) for g in row.groups.values()),
        ]
        for key in keys:
            c = record["cells"][key]
            line += [
                _csv_number(c["mean"]),
                _csv_number(c["std"]),
                str(c["n"]),
                ";".join(repr(v["value"]) for v in c["values"]),
                c["reason"] or "",
                "1" if c["best"] else "0",
                _csv_number(c["paper"]),
                _csv_number(c["paper_std"]),
                _csv_number(c["delta"]),
            ]
            if has_interval(key):
                interval = c["interval"] or {}
                line += [_csv_number(interval.get("low")), _csv_number(interval.get("high"))]
        line += [row_text(row.groups), record["paper_row_label"] or "", "; ".join(row.notes)]
        writer.writerow(line)
    return buffer.getvalue()

