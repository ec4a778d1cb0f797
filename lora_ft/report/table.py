"""Turn run directories into the paper's Table 3 (GPT-2 on E2E) and Table 4 (WikiSQL / MNLI-m / SAMSum).

The rules, in the order a reader needs them:

- Rows. A row is one configuration: runs whose resolved configs differ only in ``training.seed`` and
  the ``output`` section are the seeds of one row; runs of different configs never share a row (rows
  with the same label get the differing config keys appended). Table 4 rows are "model + method +
  size": a row holds one configuration per task (WikiSQL, MNLI, SAMSum).
- Trainable parameters are the counts MEASURED by the runs (``results.json``), never the paper's.
- Scores: results.json stores the paper's units (BLEU 70.4; NIST and CIDEr as they are), as `lora-ft eval`
  prints them; tables, CSV and JSON carry the same units.
- Each seed's score comes from one evaluation on the report split (E2E: test; WikiSQL: validation;
  MNLI: validation, i.e. validation_matched; SAMSum: test; or ``split=``): with ``epoch="best"`` the evaluation with the
  highest primary metric (E2E BLEU, WikiSQL and MNLI accuracy, SAMSum ROUGE-L; the paper's practice,
  optimistic when the split is the test set), with ``epoch="last"`` the latest one, with
  ``epoch="best_val_loss"`` the one at the epoch of lowest validation loss. All metrics of a seed come
  from that same evaluation.
- A cell is mean ± sample standard deviation (ddof=1) over the seeds that have a score, printed
  compactly as the paper does ("70.4±.1", the ± rounded to the mean's decimals; decimals as the paper
  prints each column unless ``digits=``). "(n=2)" follows when fewer seeds than the row's runs have a
  score. A single seed prints without ±. CSV and JSON carry the same numbers unrounded.
- The best rounded mean of each column is bold (only when at least two rows have a value).
- Beside each metric: the paper's value for the matching row (``paper_numbers.match_paper_row``) and
  the difference ours − paper. GPT-3 rows are the paper's GPT-3 175B numbers; runs are on stand-ins.
- Empty cells say why: "not run", "not evaluated", "failed: <reason>", "not scored".
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import re
import statistics
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

from lora_ft.report.paper_numbers import (
    GPT2_MODELS,
    GPT3_LABEL,
    TABLE4_FLUCTUATION,
    TASKS_TABLE3,
    TASKS_TABLE4,
    PaperMatch,
    match_paper_row,
    model_key,
)
from lora_ft.results import RESULTS_FILENAME, Evaluation, ResultsError, RunResults, read_results
from ..errors import UserError

Layout = Literal["auto", "table3", "table4"]
Format = Literal["markdown", "latex", "csv", "json"]
EpochChoice = Literal["best", "last", "best_val_loss"]
LAYOUTS = ("auto", "table3", "table4")


class ReportError(UserError, ValueError):
    """The runs given cannot make the requested table, plot or analysis (the message says why and what to do)."""


FORMATS = ("markdown", "latex", "csv", "json")
EPOCH_CHOICES = ("best", "last", "best_val_loss")


# --------------------------------------------------------------------------------------------
# Columns
# --------------------------------------------------------------------------------------------


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
    )
}
LAYOUT_COLUMNS: dict[str, tuple[str, ...]] = {
    "table3": ("bleu", "nist", "meteor", "rouge_l", "cider"),
    "table4": ("wikisql_acc", "mnli_acc", "samsum_r1", "samsum_r2", "samsum_rl"),
}
# The metric that picks a seed's best evaluation.
PRIMARY_METRIC: dict[str, str] = {"e2e": "bleu", "wikisql": "wikisql_acc", "mnli": "mnli_acc", "samsum": "samsum_rl"}
# The split a task is reported on, first match wins.
DEFAULT_SPLITS: dict[str, tuple[str, ...]] = {
    "e2e": ("test",),
    "wikisql": ("validation", "dev"),
    "mnli": ("validation_matched", "validation"),
    "samsum": ("test",),
}
TASK_LABELS = {"e2e": "E2E", "wikisql": "WikiSQL", "mnli": "MNLI-m", "samsum": "SAMSum"}
# Paper order of methods, used to order rows.
METHOD_ORDER: dict[str, tuple[str, ...]] = {
    "table3": ("ft", "adapter_l", "adapter_h", "ft_top", "prelayer", "preembed", "bitfit", "lora"),
    "table4": ("ft", "ft_top", "bitfit", "preembed", "prelayer", "adapter_h", "adapter_l", "lora"),
}


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


# --------------------------------------------------------------------------------------------
# Loading and grouping runs
# --------------------------------------------------------------------------------------------


@dataclass
class LoadedRun:
    run_dir: Path
    results: RunResults

    @property
    def task(self) -> str:
        return str((self.results.config.get("task") or {}).get("name", "")).lower()

    @property
    def seed_label(self) -> str:
        seed = self.results.seed
        if seed is None:
            seed = (self.results.config.get("training") or {}).get("seed")
        return f"seed {seed}" if seed is not None else self.run_dir.name


@dataclass
class Skipped:
    path: Path
    reason: str


def find_run_dirs(paths: Iterable[str | Path]) -> tuple[list[Path], list[Skipped]]:
    """Run directories under ``paths``: a path holding ``results.json`` is one; any other folder is searched."""
    found: list[Path] = []
    skipped: list[Skipped] = []
    for raw in paths:
        path = Path(raw)
        if (path / RESULTS_FILENAME).is_file():
            found.append(path)
        elif path.is_dir():
            below = sorted(p.parent for p in path.rglob(RESULTS_FILENAME))
            if below:
                found.extend(below)
            else:
                skipped.append(Skipped(path, f"no {RESULTS_FILENAME} in it or below it"))
        else:
            skipped.append(Skipped(path, "does not exist" if not path.exists() else "not a directory"))
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique, skipped


def load_runs(paths: Iterable[str | Path]) -> tuple[list[LoadedRun], list[Skipped]]:
    """Read every run under ``paths``; unreadable ones are returned as :class:`Skipped` with the reason."""
    run_dirs, skipped = find_run_dirs(paths)
    loaded: list[LoadedRun] = []
    for run_dir in run_dirs:
        try:
            loaded.append(LoadedRun(run_dir, read_results(run_dir)))
        except ResultsError as exc:
            skipped.append(Skipped(run_dir, str(exc)))
    return loaded, skipped


def config_identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config without what differs between seeds of one configuration (seed, output section, sweep)."""
    identity = copy.deepcopy(dict(config))
    identity.pop("output", None)
    identity.pop("sweep", None)
    training = identity.get("training")
    if isinstance(training, dict):
        training.pop("seed", None)
    return identity


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


@dataclass
class ConfigGroup:
    """Runs of one configuration (its seeds)."""

    identity: dict[str, Any]
    runs: list[LoadedRun] = field(default_factory=list)

    @property
    def task(self) -> str:
        return str((self.identity.get("task") or {}).get("name", "")).lower()

    @property
    def model(self) -> str:
        return model_key((self.identity.get("model") or {}).get("name_or_path", ""))

    @property
    def model_name(self) -> str:
        """The model as a reader knows it: "GPT-2 M" for gpt2-medium, else the name without folders ("SmolLM2-135M")."""
        raw = str((self.identity.get("model") or {}).get("name_or_path", ""))
        short = Path(raw.rstrip("/\\")).name
        return GPT2_MODELS.get(self.model, short[:-5] if short.lower().endswith(".gguf") else short) or "?"

    @property
    def method(self) -> dict[str, Any]:
        return dict(self.identity.get("method") or {})

    def trainable_counts(self) -> list[int]:
        return sorted({r.results.parameters.trainable for r in self.runs if r.results.parameters is not None})


def group_runs(runs: Sequence[LoadedRun]) -> list[ConfigGroup]:
    """Group runs by :func:`config_identity`, in order of first appearance."""
    groups: dict[str, ConfigGroup] = {}
    for run in runs:
        identity = config_identity(run.results.config)
        groups.setdefault(_canonical(identity), ConfigGroup(identity)).runs.append(run)
    return list(groups.values())


# --------------------------------------------------------------------------------------------
# Scores of one run and one cell
# --------------------------------------------------------------------------------------------


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
    if epoch == "last":
        # epoch None = "the final model", later than any numbered epoch; on ties the latest evaluation wins.
        last = max(range(len(candidates)), key=lambda i: (math.inf if candidates[i].epoch is None else candidates[i].epoch, i))
        return candidates[last], None
    if epoch == "best_val_loss":
        if results.best_epoch is None:
            return None, "no validation loss recorded"
        at_best = [e for e in candidates if e.epoch == results.best_epoch]
        if not at_best:
            return None, f"not evaluated at best epoch {results.best_epoch}"
        return at_best[-1], None
    primary = COLUMNS[PRIMARY_METRIC[task]] if task in PRIMARY_METRIC else None
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


@dataclass
class Cell:
    """One metric of one configuration, over its seeds."""

    column: MetricColumn
    n_runs: int = 0
    scores: list[SeedScore] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "seed 111: failed: ..." for runs without a score
    reasons: list[str] = field(default_factory=list)  # the bare reasons, for an empty cell
    best: bool = False

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
    """The cell of ``column`` for the seeds of ``group`` (an empty "not run" cell when group is None)."""
    cell = Cell(column)
    if group is None:
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
        cell.scores.append(SeedScore(run.run_dir, run.seed_label, value, evaluation.epoch, evaluation.split))
    return cell


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------


def method_label(method: Mapping[str, Any]) -> str:
    """Short method name with its size: "LoRA r=4 q,v", "Adapter^L b=6", "PreLayer l_p=10, l_i=0", "FT^Top2"."""
    name = str(method.get("name", "?")).lower()
    if name == "lora":
        targets = method.get("targets")
        where = f" {','.join(str(t) for t in targets)}" if targets else ""
        label = f"LoRA r={method.get('rank', '?')}{where}"
        if method.get("rank_per_target"):
            label += " (" + ", ".join(f"r_{k}={v}" for k, v in method["rank_per_target"].items()) + ")"
        if method.get("layers") is not None:
            label += f" layers {','.join(str(i) for i in method['layers'])}"
        return label
    if name in ("adapter_h", "adapter_l"):
        return f"Adapter^{name[-1].upper()} b={method.get('bottleneck', '?')}"
    if name in ("prelayer", "preembed"):
        base = "PreLayer" if name == "prelayer" else "PreEmbed"
        return f"{base} l_p={method.get('prefix_length', '?')}, l_i={method.get('infix_length', 0)}"
    if name == "ft_top":
        return f"FT^Top{method.get('top_k', '?')}"
    return {"ft": "FT", "bitfit": "BitFit"}.get(name, name)


def _flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(obj, Mapping):
        out: dict[str, str] = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True, default=str)}


@dataclass
class Row:
    """One line of the table: a configuration (Table 3) or model+method with one configuration per task (Table 4)."""

    groups: dict[str, ConfigGroup]  # task -> its configuration group
    label: str = ""
    cells: dict[str, Cell] = field(default_factory=dict)
    paper: PaperMatch | None = None

    @property
    def first(self) -> ConfigGroup:
        return next(iter(self.groups.values()))

    @property
    def trainable(self) -> list[int]:
        return sorted({n for g in self.groups.values() for n in g.trainable_counts()})

    @property
    def notes(self) -> list[str]:
        """Problems of seeds that are missing from cells that do have a value (empty cells show their reason)."""
        notes: list[str] = []
        for cell in self.cells.values():
            if cell.scores:
                prefix = "" if len(self.groups) <= 1 else f"{TASK_LABELS.get(cell.column.task, cell.column.task)} "
                notes.extend(prefix + p for p in cell.problems)
        return list(dict.fromkeys(notes))


def _table4_rows(groups: list[ConfigGroup]) -> list[Row]:
    """Merge configurations of different tasks into one row per model+method+size (never two of one task)."""
    rows: list[Row] = []
    for group in groups:
        key = (group.model, _canonical(group.method))
        for row in rows:
            if (row.first.model, _canonical(row.first.method)) == key and group.task not in row.groups:
                row.groups[group.task] = group
                break
        else:
            rows.append(Row({group.task: group}))
    return rows


def _label_rows(rows: list[Row]) -> None:
    for row in rows:
        row.label = f"{row.first.model_name} ({method_label(row.first.method)})"
    by_label: dict[str, list[Row]] = {}
    for row in rows:
        by_label.setdefault(row.label, []).append(row)
    for same in by_label.values():
        if len(same) < 2:
            continue
        # Per row: config values shared by all its groups (task-specific keys excluded).
        values: list[dict[str, str]] = []
        for row in same:
            flats = [_flatten({k: v for k, v in g.identity.items() if k != "task"}) for g in row.groups.values()]
            values.append({k: v for k, v in flats[0].items() if all(f.get(k) == v for f in flats[1:])})
        keys = sorted(set().union(*values))
        differing = [k for k in keys if len({vals.get(k) for vals in values}) > 1]
        for index, (row, vals) in enumerate(zip(same, values, strict=True)):
            parts = [f"{k}={vals[k]}" for k in differing if k in vals]
            row.label += f" [{', '.join(parts)}]" if parts else f" [#{index + 1}]"


def build_rows(
    groups: list[ConfigGroup], layout: str, *, epoch: str = "best", split: str | None = None
) -> list[Row]:
    """Rows of ``layout`` ("table3" / "table4") with their cells scored, paper rows matched, and best cells marked."""
    if layout == "table3":
        rows = [Row({g.task: g}) for g in groups if g.task in TASKS_TABLE3]
    else:
        rows = _table4_rows([g for g in groups if g.task in TASKS_TABLE4])
    for row in rows:
        for key in LAYOUT_COLUMNS[layout]:
            column = COLUMNS[key]
            row.cells[key] = score_cell(row.groups.get(column.task), column, epoch=epoch, split=split)
        trainable = row.trainable
        row.paper = match_paper_row(row.first.identity, trainable[0] if len(trainable) == 1 else None)
    order = METHOD_ORDER[layout]
    model_rank = {"gpt2-medium": 0, "gpt2-large": 1}

    def sort_key(row: Row) -> tuple:
        method = str(row.first.method.get("name", ""))
        trainable = row.trainable
        return (
            model_rank.get(row.first.model, 2),
            row.first.model,
            order.index(method) if method in order else len(order),
            statistics.fmean(trainable) if trainable else math.inf,
            _canonical(row.first.method),
        )

    rows.sort(key=sort_key)
    _label_rows(rows)
    return rows


def _rounded(value: float, decimals: int) -> float:
    return round(value, decimals)


def _mark_best(rows: list[Row], decimals: Mapping[str, int]) -> None:
    for key in decimals:
        means = [(row.cells[key], row.cells[key].mean) for row in rows if row.cells[key].mean is not None]
        if len(means) < 2:
            continue
        top = max(_rounded(m, decimals[key]) for _, m in means)
        for cell, m in means:
            cell.best = _rounded(m, decimals[key]) == top


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


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


def format_trainable(counts: Sequence[int]) -> str:
    """Measured counts in millions as the paper prints them (0.39M); exact below 10,000."""
    if not counts:
        return "?"
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
    if layout == "table3":
        return str(len(row.first.runs))
    return " / ".join(str(len(row.groups[t].runs)) if t in row.groups else "-" for t in TASKS_TABLE4)


def _footnotes(rows: list[Row], layout: str, epoch: str, split: str | None, skipped: list[Skipped]) -> list[str]:
    """Plain-text notes under the table (renderers escape them)."""
    selection = {
        "best": "the evaluation with the best primary metric (E2E BLEU, accuracy, SAMSum ROUGE-L), as the paper did",
        "last": "the last evaluation",
        "best_val_loss": "the evaluation at the epoch of lowest validation loss",
    }[epoch]
    tasks = TASKS_TABLE3 if layout == "table3" else TASKS_TABLE4
    splits = split or ", ".join(f"{TASK_LABELS[t]} {DEFAULT_SPLITS[t][0]}" for t in tasks)
    notes = [
        f"Scores: mean±sample std (ddof=1) over seeds; each seed's score from {selection}; split: {splits}.",
        "Trainable parameters: counted on the runs themselves (results.json), not copied from the paper.",
        f"paper (Δ): the matching row of the paper's Table {3 if layout == 'table3' else 4} and the difference ours - paper; "
        "* marks numbers the paper took from prior work. Bold: best value per column.",
    ]
    if layout == "table4":
        models = sorted({g.model_name for r in rows for g in r.groups.values()})
        fluct = ", ".join(f"±{TABLE4_FLUCTUATION[k]} {COLUMNS[k].header}" for k in LAYOUT_COLUMNS["table4"])
        notes.append(
            f"Paper numbers are {GPT3_LABEL}'s; these runs used {', '.join(models) or 'other models'} "
            f"(a different model). The paper's fluctuation: {fluct}."
        )
    for item in skipped:
        notes.append(f"Left out: {item.path}: {item.reason}")
    return notes


def _markdown_escape(text: str) -> str:
    return re.sub(r"([\\|*_`])", r"\\\1", text.replace("\n", " "))


def _render_markdown(rows: list[Row], layout: str, epoch: str, split: str | None, skipped: list[Skipped],
                     decimals: Mapping[str, int]) -> str:
    header = ["Model & Method", "# Trainable", "Seeds" if layout == "table3" else "Seeds (W / M / S)"]
    align = ["---", "---:", "---:"]
    for key in LAYOUT_COLUMNS[layout]:
        header += [COLUMNS[key].header, "paper (Δ)"]
        align += ["---:", "---:"]
    header += ["Paper row", "Notes"]
    align += ["---", "---"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    for row in rows:
        cells = [_markdown_escape(row.label), format_trainable(row.trainable), _seeds_text(row, layout)]
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
    notes = _footnotes(rows, layout, epoch, split, skipped)
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


def _render_latex(rows: list[Row], layout: str, epoch: str, split: str | None, skipped: list[Skipped],
                  decimals: Mapping[str, int]) -> str:
    pm = r"$\pm$"
    keys = LAYOUT_COLUMNS[layout]
    spec = "lrr" + "rr" * len(keys) + "ll"
    header = ["Model \\& Method", r"\# Trainable", "Seeds" if layout == "table3" else "Seeds (W / M / S)"]
    for key in keys:
        header += [latex_escape(COLUMNS[key].header), r"paper ($\Delta$)"]
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
        cells = [_latex_label(row.label), latex_escape(format_trainable(row.trainable)), latex_escape(_seeds_text(row, layout))]
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
    caption = "GPT-2 on E2E (Table 3 layout)" if layout == "table3" else "WikiSQL, MNLI-m, SAMSum (Table 4 layout)"
    lines.append(r"\caption{" + latex_escape(caption) + "}")
    notes = _footnotes(rows, layout, epoch, split, skipped)
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
        "paper_row": row.paper.row.label if row.paper else None,
        "paper_row_label": row.paper.label if row.paper else None,
        "paper_from_prior_work": row.paper.row.from_prior_work if row.paper else None,
        "paper_same_model": row.paper.same_model if row.paper else None,
        "paper_trainable": row.paper.row.trainable_printed if row.paper else None,
        "cells": {key: _cell_record(row, key) for key in LAYOUT_COLUMNS[layout]},
        "notes": row.notes,
    }


def _render_json(rows: list[Row], layout: str, epoch: str, split: str | None, skipped: list[Skipped]) -> str:
    doc = {
        "layout": layout,
        "epoch": epoch,
        "split": split,
        "columns": [
            {"key": k, "header": COLUMNS[k].header, "task": COLUMNS[k].task, "decimals": COLUMNS[k].decimals}
            for k in LAYOUT_COLUMNS[layout]
        ],
        "rows": [_row_record(row, layout) for row in rows],
        "skipped": [{"path": str(s.path), "reason": s.reason} for s in skipped],
        "footnotes": _footnotes(rows, layout, epoch, split, skipped),
    }
    return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _csv_number(value: float | int | None) -> str:
    return "" if value is None else repr(value)


def _render_csv(rows: list[Row], layout: str) -> str:
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
            _canonical(row.first.method),
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


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def choose_layout(groups: Sequence[ConfigGroup]) -> str:
    """"table3" when every run is E2E, "table4" when every run is WikiSQL/MNLI/SAMSum; otherwise an error."""
    tasks = {g.task for g in groups}
    if tasks and tasks <= set(TASKS_TABLE3):
        return "table3"
    if tasks and tasks <= set(TASKS_TABLE4):
        return "table4"
    raise ReportError(
        f"cannot choose a layout for runs of tasks {sorted(tasks)}: Table 3 is E2E, Table 4 is WikiSQL/MNLI/SAMSum; "
        "pass layout='table3' or 'table4' (runs of other tasks are then left out) or give fewer run directories"
    )


def build_table(
    run_dirs: Sequence[str | Path],
    *,
    layout: str = "auto",
    fmt: str = "markdown",
    epoch: str = "best",
    split: str | None = None,
    digits: int | None = None,
) -> str:
    """Render the runs under ``run_dirs`` as a Table 3 / Table 4 style table (rules: module docstring).

    ``run_dirs`` may be run directories or folders holding them (searched recursively for results.json).
    ``fmt``: "markdown", "latex" (a compile-ready ``table`` float, ASCII only), "csv" or "json" (the
    last two carry unrounded means, stds and per-seed values). ``digits`` overrides every column's
    decimals in markdown and LaTeX.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: expected one of {', '.join(LAYOUTS)}")
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r}: expected one of {', '.join(FORMATS)}")
    if epoch not in EPOCH_CHOICES:
        raise ValueError(f"epoch={epoch!r}: expected one of {', '.join(EPOCH_CHOICES)}")
    runs, skipped = load_runs(run_dirs)
    if not runs:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped) or "no paths given"
        raise ReportError(f"no readable runs ({reasons})")
    groups = group_runs(runs)
    if layout == "auto":
        layout = choose_layout(groups)
    tasks = TASKS_TABLE3 if layout == "table3" else TASKS_TABLE4
    for group in groups:
        if group.task not in tasks:
            skipped.extend(Skipped(r.run_dir, f"task {group.task!r} is not in the {layout} layout") for r in group.runs)
    rows = build_rows(groups, layout, epoch=epoch, split=split)
    if not rows:
        raise ReportError(f"none of the runs belongs in {layout} (tasks {', '.join(tasks)})")
    decimals = {k: (COLUMNS[k].decimals if digits is None else digits) for k in LAYOUT_COLUMNS[layout]}
    _mark_best(rows, decimals)
    if fmt == "markdown":
        return _render_markdown(rows, layout, epoch, split, skipped, decimals)
    if fmt == "latex":
        return _render_latex(rows, layout, epoch, split, skipped, decimals)
    if fmt == "csv":
        return _render_csv(rows, layout)
    return _render_json(rows, layout, epoch, split, skipped)
