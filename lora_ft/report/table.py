"""Turn run directories into the paper's Table 3 (GPT-2 on E2E) and Table 4 (WikiSQL / MNLI-m / SAMSum).

The rules, in the order a reader needs them:

- Rows. A row is one configuration: runs whose resolved configs differ only in ``training.seed`` and
  the ``output`` section are the seeds of one row; runs of different configs never share a row (rows
  with the same label get the differing config keys appended). Table 4 rows are "model + method +
  size": a row holds one configuration per task (WikiSQL, MNLI, SAMSum).
- Seeds: the number of distinct ``training.seed`` values of a row's runs; runs that share a seed (a copied run
  directory, a rerun) count once there, and a note under the table names them (their scores are all in the mean).
- Trainable parameters are the counts MEASURED by the runs (``results.json``), never the paper's.
- Scores: results.json stores the paper's units (BLEU 70.4; NIST and CIDEr as they are), as `lora-ft eval`
  prints them; tables, CSV and JSON carry the same units.
- Each seed's score comes from one evaluation on the report split (E2E: test; WikiSQL: validation;
  MNLI: validation, i.e. validation_matched; SAMSum: test; or ``split=``): with ``epoch="best"`` the evaluation with the
  highest primary metric (E2E BLEU, WikiSQL and MNLI accuracy, SAMSum ROUGE-L; the paper's practice,
  optimistic when the split is the test set), with ``epoch="last"`` the latest one, with
  ``epoch="best-validation"`` the one at the epoch of lowest validation loss (chosen on the selection split, never the
  scored one; "n/a" when that epoch was not evaluated). The untrained model has one evaluation, whatever the rule.
  All metrics of a seed come
  from that same evaluation.
- A cell is mean ± sample standard deviation (ddof=1) over the seeds that have a score, printed
  compactly as the paper does ("70.4±.1", the ± rounded to the mean's decimals; decimals as the paper
  prints each column unless ``digits=``). "(n=2)" follows when fewer seeds than the row's runs have a
  score. A single seed prints without ±. CSV and JSON carry the same numbers unrounded.
- The best rounded mean of each column is bold (only when at least two rows have a value).
- Beside each metric: the paper's value for the matching row (``paper_numbers.match_paper_row``) and
  the difference ours − paper. GPT-3 rows are the paper's GPT-3 175B numbers; runs are on stand-ins.
- Empty cells say why: "not run", "not evaluated", "failed: <reason>", "not scored", or "n/a: <short reason>" for a
  configuration or a whole task listed in a ``not_applicable.tsv`` under the run folders (``not_applicable.py``: a
  config the CLI refuses is a row of its own, its full reason in the row's notes; a task's reason is a note).
- ``compare_with`` (a Table 3 GPT-2 model): E2E runs of other models are set beside that model's paper rows, labelled
  "[a different model]" (``paper_numbers.match_paper_row``).

Where each step lives: ``runs.py`` finds, reads and groups the runs; ``cells.py`` picks each seed's evaluation and
scores a cell; ``rows.py`` builds, orders and labels the rows; ``render.py`` writes markdown, LaTeX, JSON and CSV.
This module chooses the layout and ties them together (:func:`build_table`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from lora_ft.report.cells import COLUMNS, EPOCH_CHOICES, LAYOUT_COLUMNS, LAYOUT_TASKS, select_evaluation
from lora_ft.report.not_applicable import read_not_applicable
from lora_ft.report.paper_numbers import GPT2_MODELS, TASKS_TABLE3, TASKS_TABLE4
from lora_ft.report.intervals import attach_intervals
from lora_ft.report.notes import TableContext
from lora_ft.report.render import (
    format_mean_std,
    latex_escape,
    render_csv,
    render_json,
    render_latex,
    render_markdown,
)
from lora_ft.report.rows import build_rows, mark_best
from lora_ft.report.runs import ConfigGroup, ReportError, Skipped, group_runs, load_runs

# Re-exported: the names callers import from here (the table's entry point).
__all__ = ["ReportError", "build_table", "choose_layout", "format_mean_std", "latex_escape", "select_evaluation"]

LAYOUTS = ("auto", *LAYOUT_COLUMNS)
FORMATS = ("markdown", "latex", "csv", "json")


def choose_layout(groups: Sequence[ConfigGroup], extra_tasks: Sequence[str] = ()) -> str:
    """"table3" when every run is E2E, "table4" when every run is WikiSQL/MNLI/SAMSum; otherwise an error.

    ``extra_tasks``: tasks of not-applicable entries, counted like runs' tasks."""
    tasks = {g.task for g in groups} | set(extra_tasks)
    if tasks and tasks <= set(TASKS_TABLE3):
        return "table3"
    if tasks and tasks <= set(TASKS_TABLE4):
        return "table4"
    metrics = sorted({str((g.identity.get("task") or {}).get("metric")) for g in groups if g.task == "custom"})
    if tasks == {"custom"} and len(metrics) == 1 and f"custom-{metrics[0]}" in LAYOUT_COLUMNS:
        return f"custom-{metrics[0]}"  # your own data: one table per metric
    raise ReportError(
        f"cannot choose a layout for runs of tasks {sorted(tasks)}"
        + (f" (custom metrics {', '.join(metrics)})" if metrics else "")
        + ": Table 3 is E2E, Table 4 is WikiSQL/MNLI/SAMSum, a custom task's table has one task.metric; pass a layout "
        f"({', '.join(LAYOUTS[1:])}: runs of other tasks are then left out) or give fewer run directories"
    )


def build_table(
    run_dirs: Sequence[str | Path],
    *,
    layout: str = "auto",
    fmt: str = "markdown",
    epoch: str = "best",
    split: str | None = None,
    digits: int | None = None,
    compare_with: str | None = None,
) -> str:
    """Render the runs under ``run_dirs`` as a Table 3 / Table 4 style table (rules: module docstring).

    ``run_dirs`` may be run directories or folders holding them (searched recursively for results.json).
    ``fmt``: "markdown", "latex" (a compile-ready ``table`` float, ASCII only), "csv" or "json" (the
    last two carry unrounded means, stds and per-seed values). ``digits`` overrides every column's
    decimals in markdown and LaTeX. ``compare_with``: "gpt2-medium" or "gpt2-large" (module docstring).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: expected one of {', '.join(LAYOUTS)}")
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r}: expected one of {', '.join(FORMATS)}")
    if epoch not in EPOCH_CHOICES:
        raise ValueError(f"epoch={epoch!r}: expected one of {', '.join(EPOCH_CHOICES)}")
    if compare_with is not None and compare_with not in GPT2_MODELS:
        raise ReportError(f"compare_with={compare_with!r}: expected one of {', '.join(GPT2_MODELS)}")
    runs, skipped = load_runs(run_dirs)
    if not runs:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped) or "no paths given"
        raise ReportError(f"no readable runs ({reasons})")
    not_applicable, unreadable = read_not_applicable(run_dirs)
    skipped.extend(unreadable)
    groups = group_runs(runs)
    if layout == "auto":
        layout = choose_layout(groups, [e.task for e in not_applicable if e.config is not None])
    tasks = LAYOUT_TASKS[layout]
    for group in groups:
        if group.task not in tasks:
            skipped.extend(Skipped(r.run_dir, f"task {group.task!r} is not in the {layout} layout") for r in group.runs)
    for entry in not_applicable:
        if entry.task not in tasks:
            skipped.append(Skipped(entry.source, f"n/a entry {entry.name}: task {entry.task!r} is not in the {layout} layout"))
    not_applicable = [e for e in not_applicable if e.task in tasks]
    rows = build_rows(groups, layout, epoch=epoch, split=split, not_applicable=not_applicable, compare_with=compare_with)
    if not rows:
        raise ReportError(f"none of the runs belongs in {layout} (tasks {', '.join(tasks)})")
    decimals = {k: (COLUMNS[k].decimals if digits is None else digits) for k in LAYOUT_COLUMNS[layout]}
    mark_best(rows, decimals)
    attach_intervals([cell for row in rows for cell in row.cells.values()])
    ctx = TableContext(layout, epoch, split, skipped, [e for e in not_applicable if e.config is None], compare_with)
    if fmt == "markdown":
        return render_markdown(rows, ctx, decimals)
    if fmt == "latex":
        return render_latex(rows, ctx, decimals)
    if fmt == "csv":
        return render_csv(rows, layout)
    return render_json(rows, ctx)
