"""The notes under a table: how each number was made (the epoch rule, the interval, the paper columns) and what was
left out. Plain text; each renderer escapes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lora_ft.report.cells import COLUMNS, DEFAULT_SPLITS, LAYOUT_COLUMNS, LAYOUT_TASKS, PRIMARY_METRIC, TASK_LABELS
from lora_ft.report.intervals import BOOTSTRAP_SEED, LEVEL, RESAMPLES
from lora_ft.report.not_applicable import NotApplicable
from lora_ft.report.paper_numbers import (
    GPT2_MODELS,
    GPT3_LABEL,
    SHARE_MATCH_FACTOR,
    TABLE4_FLUCTUATION,
    paper_model_total,
)
from lora_ft.report.rows import Row
from lora_ft.report.runs import Skipped

# How each --epoch rule picks a seed's evaluation, as the notes say it.
EPOCH_RULES = {
    "best": "the evaluation with the best primary metric (E2E BLEU, accuracy, SAMSum ROUGE-L) on the scored split, as "
            "the paper did (--epoch best: optimistic, the epoch is chosen on the scored items)",
    "last": "the last evaluation (--epoch last)",
    "best-validation": "the evaluation at the epoch of lowest validation loss, i.e. chosen on the selection split "
                       "(--epoch best-validation); n/a where that epoch was not evaluated",
}


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


def shown(path: Path) -> Path:
    """Relative to the working directory when below it: a table made in a clone reads the same as the committed one."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def footnotes(rows: list[Row], ctx: TableContext) -> list[str]:
    """Plain-text notes under the table (renderers escape them)."""
    layout, split = ctx.layout, ctx.split
    tasks = LAYOUT_TASKS[layout]
    splits = split or ", ".join(f"{TASK_LABELS[t]} {DEFAULT_SPLITS[t][0]}" for t in tasks)
    paper = (f"{ctx.paper_header}: the matching row of the paper's Table {3 if layout == 'table3' else 4} and the "
             "difference ours - paper; * marks numbers the paper took from prior work." if layout in ("table3", "table4")
             else f"{ctx.paper_header}: none, the paper has no row for a task of your own.")
    notes = [
        f"Scores: mean±sample std (ddof=1) over seeds; each seed's score from {EPOCH_RULES[ctx.epoch]}; split: {splits}.",
        *interval_notes(rows),
        "Trainable parameters: counted on the runs themselves (results.json), not copied from the paper.",
        paper + " Bold: best value per column.",
        "LR: the run's learning rate, and whether a search chose it (training.selected_by: the grid and the criterion, "
        "measured on the selection split; \"at the grid's edge\" when the choice is the grid's smallest or largest).",
    ]
    if any(r.untrained for r in rows):
        notes.append("(base model, untrained): the model's scores before any training (lora-ft eval --config --base, "
                     "epoch 0), never bold: a method clearly beats it where its interval lies wholly above the base "
                     "model's.")
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
    notes.extend(shared_seed_notes(rows))
    for item in ctx.skipped:
        notes.append(f"Left out: {shown(item.path)}: {item.reason}")
    return notes


def interval_notes(rows: list[Row]) -> list[str]:
    """Which interval the 95% CI columns hold, over how many items per task."""
    items: dict[str, set[int]] = {}
    for row in rows:
        for cell in row.cells.values():
            if cell.interval is not None:
                items.setdefault(cell.column.task, set()).add(cell.interval.items)
    if not items:
        return []
    counts = "; ".join(f"{COLUMNS[PRIMARY_METRIC[t]].header}: {' or '.join(str(n) for n in sorted(items[t]))}"
                       for t in items)
    return [f"{LEVEL:.0%} CI: a percentile bootstrap over the N scored items ({counts}), seeds pooled, {RESAMPLES} "
            f"resamples (RNG seed {BOOTSTRAP_SEED}): each resample draws N items with replacement, rescores every "
            "seed of the row on them with lora-ft's scorers and averages over the seeds. It shows how much the score "
            "depends on which items were scored, not the spread over seeds (the ±)."]


def shared_seed_notes(rows: list[Row]) -> list[str]:
    """One note per seed that several runs of one row share (a copied run directory, a rerun): the Seeds column counts
    that seed once, and the note names the runs so that the reader can see what the mean and ± are made of."""
    notes = []
    for row in rows:
        for task, group in row.groups.items():
            where = row.label if len(row.groups) <= 1 else f"{row.label}, {TASK_LABELS.get(task, task)}"
            for seed, runs in group.runs_by_seed().items():
                if len(runs) > 1:
                    paths = ", ".join(str(shown(r.run_dir)) for r in runs)
                    notes.append(f"{where}: runs {paths} share {seed}: the Seeds column counts it once; the mean and ± "
                                 "include each run")
    return notes
