"""Render table rows as markdown, LaTeX, JSON or CSV (the texts of a cell, the footnotes, each format's escaping)."""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from lora_ft.report.cells import COLUMNS, DEFAULT_SPLITS, LAYOUT_COLUMNS, LAYOUT_TASKS, TASK_LABELS
from lora_ft.report.not_applicable import NotApplicable
from lora_ft.report.paper_numbers import (
    GPT2_MODELS,
    GPT3_LABEL,
    SHARE_MATCH_FACTOR,
    TABLE4_FLUCTUATION,
    TASKS_TABLE4,
    paper_model_total,
)
from lora_ft.report.rows import Row
from lora_ft.report.runs import Skipped, canonical_json


@dataclass
class TableContext:
    """What the notes under a table need besides its rows."""

    layout: str
    epoch: str = "best"
    split: str | None = None
    skipped: list[Skipped] = field(default_factory=list)
    whole_task: list[NotApplicable] = field(default_factory=list)  # tasks with no runs at all, and why
    compare_with: str | None = None  # Table 3 model stand-in runs were set beside (lora-ft table --compare-with)

    @property
    def paper_header(self) -> str:
        return "paper (Δ)" if self.compare_with is None else f"paper {GPT2_MODELS[self.compare_with]} (Δ)"


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
    return format_trainable(row.trainable, not any(g.runs for g in row.groups.values()) and bool(row.refused))


def _footnotes(rows: list[Row], ctx: TableContext) -> list[str]:
    """Plain-text notes under the table (renderers escape them)."""
    layout, epoch, split = ctx.layout, ctx.epoch, ctx.split
    selection = {
        "best": "the evaluation with the best primary metric (E2E BLEU, accuracy, SAMSum ROUGE-L), as the paper did",
        "last": "the last evaluation",
        "best_val_loss": "the evaluation at the epoch of lowest validation loss",
    }[epoch]
    tasks = LAYOUT_TASKS[layout]
    splits = split or ", ".join(f"{TASK_LABELS[t]} {DEFAULT_SPLITS[t][0]}" for t in tasks)
    paper = (f"{ctx.paper_header}: the matching row of the paper's Table {3 if layout == 'table3' else 4} and the "
             "difference ours - paper; * marks numbers the paper took from prior work." if layout in ("table3", "table4")
             else f"{ctx.paper_header}: none, the paper has no row for a task of your own.")
    notes = [
        f"Scores: mean±sample std (ddof=1) over seeds; each seed's score from {selection}; split: {splits}.",
        "Trainable parameters: counted on the runs themselves (results.json), not copied from the paper.",
        paper + " Bold: best value per column.",
    ]
    stand_ins = sorted({r.first.model_name for r in rows if r.paper is not None and not r.paper.same_model})
    if layout == "table3" and ctx.compare_with is not None and stand_ins:
        name = GPT2_MODELS[ctx.compare_with]
        notes.append(
            f"Rows marked [a different model] ran on {', '.join(stand_ins)}: their {ctx.paper_header} is the paper's "
            f"{name} row "
            f"(--compare-with {ctx.compare_with}), not a number for this model. Matched by method with equal structural "
            f"sizes (rank and targets, prefix and infix length, top_k); the Adapter rows, which the paper sizes by a "
            f"parameter count, match the {name} row whose share of its {paper_model_total(ctx.compare_with) / 1e6:.2f}M "
            f"parameters is nearest the run's share of its base model (within a factor of {SHARE_MATCH_FACTOR:g})."
        )
    for entry in ctx.whole_task:
        notes.append(f"{TASK_LABELS.get(entry.task, entry.task)} n/a in every row: {entry.reason}")
    if any(r.refused for r in rows):
        notes.append("n/a: the configuration was not run because the CLI refuses it; the row's notes give the reason.")
    if layout == "table4":
        models = sorted({g.model_name for r in rows for g in r.groups.values()})
        fluct = ", ".join(f"±{TABLE4_FLUCTUATION[k]} {COLUMNS[k].header}" for k in LAYOUT_COLUMNS["table4"])
        notes.append(
            f"Paper numbers are {GPT3_LABEL}'s; these runs used {', '.join(models) or 'other models'} "
            f"(a different model). The paper's fluctuation: {fluct}."
        )
    notes.extend(_shared_seed_notes(rows))
    for item in ctx.skipped:
        notes.append(f"Left out: {_shown(item.path)}: {item.reason}")
    return notes


def _shared_seed_notes(rows: list[Row]) -> list[str]:
    """One note per seed that several runs of one row share (a copied run directory, a rerun): the Seeds column counts
    that seed once, and the note names the runs so that the reader can see what the mean and ± are made of."""
    notes = []
    for row in rows:
        for task, group in row.groups.items():
            where = row.label if len(row.groups) <= 1 else f"{row.label}, {TASK_LABELS.get(task, task)}"
            for seed, runs in group.runs_by_seed().items():
                if len(runs) > 1:
                    paths = ", ".join(str(_shown(r.run_dir)) for r in runs)
                    notes.append(f"{where}: runs {paths} share {seed}: the Seeds column counts it once; the mean and ± "
                                 "include each run")
    return notes


def _shown(path: Path) -> Path:
    """Relative to the working directory when below it: a table made in a clone reads the same as the committed one."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def _markdown_escape(text: str) -> str:
    return re.sub(r"([\\|*_`])", r"\\\1", text.replace("\n", " "))


def render_markdown(rows: list[Row], ctx: TableContext, decimals: Mapping[str, int]) -> str:
    layout = ctx.layout
    header = ["Model & Method", "# Trainable", "Seeds" if layout != "table4" else "Seeds (W / M / S)"]
    align = ["---", "---:", "---:"]
    for key in LAYOUT_COLUMNS[layout]:
        header += [COLUMNS[key].header, ctx.paper_header]
        align += ["---:", "---:"]
    header += ["Paper row", "Notes"]
    align += ["---", "---"]
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
            cells.append(texts.paper)
        cells.append(_markdown_escape(row.paper.label) if row.paper else "no matching row")
        cells.append(_markdown_escape("; ".join(row.notes)))
        lines.append("| " + " | ".join(cells) + " |")
    notes = _footnotes(rows, ctx)
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
    spec = "lrr" + "rr" * len(keys) + "ll"
    header = ["Model \\& Method", r"\# Trainable", "Seeds" if layout != "table4" else "Seeds (W / M / S)"]
    for key in keys:
        header += [latex_escape(COLUMNS[key].header), latex_escape(ctx.paper_header)]
    header += ["Paper row", "Notes"]
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
            cells.append(texts.paper)
        cells.append(_latex_label(row.paper.label) if row.paper else "no matching row")
        cells.append(latex_escape("; ".join(row.notes)))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\hline", r"\end{tabular}"]
    caption = {"table3": "GPT-2 on E2E (Table 3 layout)", "table4": "WikiSQL, MNLI-m, SAMSum (Table 4 layout)"}.get(
        layout, f"A custom task ({layout.removeprefix('custom-')})")
    if layout == "table3" and ctx.compare_with is not None and any(r.paper and not r.paper.same_model for r in rows):
        caption = f"E2E (Table 3 layout); paper columns: {GPT2_MODELS[ctx.compare_with]}'s numbers, a different model"
    lines.append(r"\caption{" + latex_escape(caption) + "}")
    notes = _footnotes(rows, ctx)
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
    }


def _row_record(row: Row, layout: str) -> dict[str, Any]:
    return {
        "label": row.label,
        "model": row.first.model,
        "method": row.first.method,
        "trainable": row.trainable,
        "runs": {task: [str(r.run_dir) for r in g.runs] for task, g in row.groups.items()},
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
        "footnotes": _footnotes(rows, ctx),
    }
    return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _csv_number(value: float | int | None) -> str:
    return "" if value is None else repr(value)


def render_csv(rows: list[Row], layout: str) -> str:
    keys = LAYOUT_COLUMNS[layout]
    header = ["row", "model", "method", "trainable", "runs"]
    for key in keys:
        header += [f"{key}_{part}" for part in ("mean", "std", "n", "values", "reason", "best", "paper", "paper_std", "delta")]
    header += ["paper_row", "notes"]
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
        line += [record["paper_row_label"] or "", "; ".join(row.notes)]
        writer.writerow(line)
    return buffer.getvalue()

