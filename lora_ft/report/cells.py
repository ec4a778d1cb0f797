"""Which score a seed is reported by, and one table cell (a metric over a configuration's seeds).

The columns of Table 3 and Table 4, the score names that feed them, the split and evaluation each seed is reported on,
and mean ± std over seeds; the rules in full are in :mod:`lora_ft.report.table`.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from lora_ft.report.runs import ConfigGroup, untrained_only
from lora_ft.results import Evaluation, RunResults, compute_best_epoch

# best: the paper's rule (the best score on the scored split); last; best-validation: the lowest validation loss, i.e.
# chosen on the selection split, without looking at the scored one.
EPOCH_CHOICES = ("best", "last", "best-validation")


@dataclass(frozen=True)
class MetricColumn:
    """One metric column: which task it scores, the score names that feed it, how many decimals to print.

    ``percent``: a percentage (paper units, 0 to 100), checked to lie in that range.
    """

    key: str
    header: str
    task: str
    aliases: tuple[str, ...]  # normalised score names (lower case, letters and digits only), in priority order
    decimals: int
    percent: bool = True


COLUMNS: dict[str, MetricColumn] = {
    c.key: c
    for c in (
        MetricColumn("bleu", "BLEU", "e2e", ("bleu",), 1),
        MetricColumn("nist", "NIST", "e2e", ("nist",), 2, percent=False),
        MetricColumn("meteor", "MET", "e2e", ("meteor",), 1),
        MetricColumn("rouge_l", "ROUGE-L", "e2e", ("rougel",), 1),
        MetricColumn("cider", "CIDEr", "e2e", ("cider", "ciderd"), 2, percent=False),
        MetricColumn(
            "wikisql_acc", "WikiSQL Acc.", "wikisql", ("lfaccuracy", "logicalformaccuracy", "lfacc", "accuracy", "acc"), 1
        ),
        MetricColumn("mnli_acc", "MNLI-m Acc.", "mnli", ("accuracy", "acc", "matchedaccuracy"), 1),
        MetricColumn("samsum_r1", "SAMSum R1", "samsum", ("rouge1", "r1"), 1),
        MetricColumn("samsum_r2", "SAMSum R2", "samsum", ("rouge2", "r2"), 1),
        MetricColumn("samsum_rl", "SAMSum RL", "samsum", ("rougel", "rl"), 1),
        # task.name: custom (your own data), one layout per task.metric
        MetricColumn("custom_bleu", "BLEU", "custom", ("bleu",), 1),
        MetricColumn("custom_rouge1", "ROUGE-1", "custom", ("rouge1",), 1),
        MetricColumn("custom_rouge2", "ROUGE-2", "custom", ("rouge2",), 1),
        MetricColumn("custom_rougel", "ROUGE-L", "custom", ("rougel",), 1),
        MetricColumn("custom_acc", "Acc.", "custom", ("accuracy",), 1),
        MetricColumn("custom_em", "EM", "custom", ("exactmatch",), 1),
    )
}
LAYOUT_COLUMNS: dict[str, tuple[str, ...]] = {
    "table3": ("bleu", "nist", "meteor", "rouge_l", "cider"),
    "table4": ("wikisql_acc", "mnli_acc", "samsum_r1", "samsum_r2", "samsum_rl"),
    "custom-bleu": ("custom_bleu",),
    "custom-rouge": ("custom_rouge1", "custom_rouge2", "custom_rougel"),
    "custom-accuracy": ("custom_acc",),
    "custom-exact_match": ("custom_em",),
}
# The tasks of each layout's rows.
LAYOUT_TASKS: dict[str, tuple[str, ...]] = {"table3": ("e2e",), "table4": ("wikisql", "mnli", "samsum"),
                                            **{key: ("custom",) for key in LAYOUT_COLUMNS if key.startswith("custom-")}}
# The metric that picks a seed's best evaluation (a custom task's: its task.metric's primary, `primary_column`).
PRIMARY_METRIC: dict[str, str] = {"e2e": "bleu", "wikisql": "wikisql_acc", "mnli": "mnli_acc", "samsum": "samsum_rl"}
CUSTOM_PRIMARY: dict[str, str] = {"bleu": "custom_bleu", "rouge": "custom_rougel", "accuracy": "custom_acc",
                                  "exact_match": "custom_em"}
# The split a task is reported on, first match wins.
DEFAULT_SPLITS: dict[str, tuple[str, ...]] = {
    "e2e": ("test",),
    "wikisql": ("validation", "dev"),
    "mnli": ("validation_matched", "validation"),
    "samsum": ("test",),
    "custom": ("test",),
}
TASK_LABELS = {"e2e": "E2E", "wikisql": "WikiSQL", "mnli": "MNLI-m", "samsum": "SAMSum", "custom": "custom task"}


def primary_column(results: RunResults, task: str) -> MetricColumn | None:
    """The column whose metric picks a seed's best evaluation: the task's, or a custom task's task.metric's."""
    if task == "custom":
        key = CUSTOM_PRIMARY.get(str((results.config.get("task") or {}).get("metric")))
    else:
        key = PRIMARY_METRIC.get(task)
    return COLUMNS[key] if key else None


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def lookup_score(scores: Mapping[str, float], column: MetricColumn) -> tuple[float | None, str | None]:
    """The score feeding ``column`` in the paper's units, or (None, why not).

    Score names are compared case- and punctuation-insensitively (``ROUGE_L`` == ``rougeL``).
    """
    normalised = {_norm(k): (k, v) for k, v in scores.items()}
    for alias in column.aliases:
        if alias not in normalised:
            continue
        name, value = normalised[alias]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return None, f"no usable {column.header} ({name}={value!r})"
        if not column.percent:
            return float(value), None
        if not 0.0 <= value <= 100.0:
            return None, f"{name}={value!r} is not a percentage in [0, 100] (results.json stores the paper's units)"
        return float(value), None
    return None, f"not scored ({column.header})"



def _short(text: str, limit: int = 80) -> str:
    line = " ".join(str(text).strip().splitlines()[:1]) if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def report_split(results: RunResults, task: str, split: str | None = None) -> str | None:
    """The split a run is reported on: ``split`` if given, else the task's default, else its only split."""
    have = list(dict.fromkeys(e.split for e in results.evaluations))
    if split is not None:
        return split
    for candidate in DEFAULT_SPLITS.get(task, ()):
        if candidate in have:
            return candidate
    return have[0] if len(have) == 1 else None


def select_evaluation(
    results: RunResults, task: str, epoch: str = "best", split: str | None = None
) -> tuple[Evaluation | None, str | None]:
    """The evaluation a seed is reported by (see module docstring), or (None, reason)."""
    if epoch not in EPOCH_CHOICES:
        raise ValueError(f"epoch={epoch!r}: expected one of {', '.join(EPOCH_CHOICES)}")
    if results.status == "failed":
        return None, f"failed: {_short(results.error or 'no reason recorded')}"
    if not results.evaluations:
        return None, "not evaluated" if results.status == "evaluated" else f"not evaluated ({results.status})"
    chosen_split = report_split(results, task, split)
    candidates = [e for e in results.evaluations if e.split == chosen_split]
    if not candidates:
        have = ", ".join(dict.fromkeys(e.split for e in results.evaluations))
        wanted = chosen_split or "/".join(DEFAULT_SPLITS.get(task, ("?",)))
        return None, f"not evaluated on {wanted} (has: {have})"
    if untrained_only(results):  # the untrained model (epoch 0): one model, no epoch to choose
        return candidates[-1], None
    if epoch == "last":
        # epoch None = "the final model", later than any numbered epoch; on ties the latest evaluation wins.
        last = max(range(len(candidates)), key=lambda i: (math.inf if candidates[i].epoch is None else candidates[i].epoch, i))
        return candidates[last], None
    if epoch == "best-validation":
        best_epoch = compute_best_epoch(results.epochs)
        if best_epoch is None:
            return None, "n/a: no validation loss recorded"
        at_best = [e for e in candidates if e.epoch == best_epoch]
        if not at_best:  # only the epochs `lora-ft eval --epochs` decoded have scores
            return None, f"n/a: epoch {best_epoch} (lowest validation loss) not evaluated on {chosen_split}"
        return at_best[-1], None
    primary = primary_column(results, task)
    if primary is None:
        return candidates[-1], None
    looked_up = [lookup_score(e.scores, primary) for e in candidates]
    scored = [(value, i) for i, (value, _) in enumerate(looked_up) if value is not None]
    if not scored:
        return None, looked_up[-1][1]
    # Highest primary metric; on ties the earliest evaluation.
    best_value = max(v for v, _ in scored)
    return candidates[min(i for v, i in scored if v == best_value)], None


@dataclass
class SeedScore:
    run_dir: Path
    seed: str
    value: float
    epoch: int | None
    split: str
    predictions_file: str | None = None  # the evaluation's, relative to run_dir: what its interval rescores


@dataclass(frozen=True)
class Interval:
    """A 95% bootstrap interval of a cell's mean over seeds (:mod:`lora_ft.report.intervals`)."""

    low: float
    high: float
    items: int  # the scored items each resample draws from
    seeds: int
    resamples: int


@dataclass
class Cell:
    """One metric of one configuration, over its seeds."""

    column: MetricColumn
    n_runs: int = 0
    scores: list[SeedScore] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "seed 111: failed: ..." for runs without a score
    reasons: list[str] = field(default_factory=list)  # the bare reasons, for an empty cell
    best: bool = False
    interval: Interval | None = None  # a primary metric's 95% interval, once computed
    interval_reason: str | None = None  # why a primary metric with a value has no interval

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(s.value for s in self.scores) if self.scores else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (ddof=1); None with fewer than two seeds."""
        return statistics.stdev(s.value for s in self.scores) if len(self.scores) >= 2 else None

    @property
    def reason(self) -> str | None:
        """Why the cell is empty (None when it has a value)."""
        if self.scores:
            return None
        if not self.reasons:
            return "not run"
        return "; ".join(dict.fromkeys(self.reasons))


def score_cell(group: ConfigGroup | None, column: MetricColumn, *, epoch: str = "best", split: str | None = None) -> Cell:
    """The cell of ``column`` for the seeds of ``group`` (an empty "not run" cell when group is None, "n/a: <why>" when
    the group is a configuration that cannot apply)."""
    cell = Cell(column)
    if group is None:
        return cell
    if group.not_applicable is not None:  # refused before it ran: the cell says why (the row's notes say it in full)
        cell.reasons.append(group.not_applicable.cell)
        return cell
    cell.n_runs = len(group.runs)
    for run in group.runs:
        evaluation, reason = select_evaluation(run.results, column.task, epoch, split)
        value = None
        if evaluation is not None:
            value, reason = lookup_score(evaluation.scores, column)
        if value is None:
            cell.reasons.append(reason or "no score")
            cell.problems.append(f"{run.seed_label}: {reason}")
            continue
        if run.results.status == "training":
            cell.problems.append(f"{run.seed_label}: still training (score so far)")
        elif run.results.status == "interrupted":  # an epoch checkpoint's score; --resume finishes the run
            cell.problems.append(f"{run.seed_label}: interrupted before the end of training (score so far)")
        cell.scores.append(SeedScore(run.run_dir, run.seed_label, value, evaluation.epoch, evaluation.split,
                                     evaluation.predictions_file))
    return cell

