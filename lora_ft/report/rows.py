"""Table rows: one configuration (Table 3) or one model + method + size across tasks (Table 4), labelled, scored,
matched to the paper's row, in the paper's order, with each column's best value marked."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Mapping

from lora_ft.report.cells import COLUMNS, LAYOUT_COLUMNS, LAYOUT_TASKS, TASK_LABELS, Cell, score_cell
from lora_ft.report.not_applicable import NotApplicable
from lora_ft.report.paper_numbers import TASKS_TABLE4, PaperMatch, match_paper_row
from lora_ft.methods.peft_types import peft_label
from lora_ft.report.runs import ConfigGroup, canonical_json, scored_model

# Paper order of methods, used to order rows.
METHOD_ORDER: dict[str, tuple[str, ...]] = {
    "table3": ("ft", "adapter_l", "adapter_h", "ft_top", "prelayer", "preembed", "bitfit", "lora"),
    "table4": ("ft", "ft_top", "bitfit", "preembed", "prelayer", "adapter_h", "adapter_l", "lora"),
}



def method_label(method: Mapping[str, Any], resolved: Mapping[str, Any] | None = None) -> str:
    """Short method name with its size: "LoRA r=4 q,v", "Adapter^L b=6", "PreLayer l_p=10, l_i=0", "FT^Top2",
    "peft LoRA+DoRA r=8 q_proj,v_proj" (`resolved`: a peft run's config with peft's defaults, results.json)."""
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
    if name == "peft":  # the resolved config (with peft's defaults) where the run recorded it
        return f"peft {peft_label(resolved or method.get('peft') or {})}"
    return {"ft": "FT", "bitfit": "BitFit", "base": "base model, untrained"}.get(name, name)


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
    not_applicable: dict[str, NotApplicable] = field(default_factory=dict)  # task -> why its cells are n/a

    @property
    def first(self) -> ConfigGroup:
        return next(iter(self.groups.values()))

    @property
    def trainable(self) -> list[int]:
        return sorted({n for g in self.groups.values() for n in g.trainable_counts()})

    @property
    def untrained(self) -> str | None:
        """"base" / "method": a row of the untrained model's scores (the reference a trained row must beat)."""
        return self.first.untrained

    @property
    def refused(self) -> dict[str, NotApplicable]:
        """task -> this row's configuration of it that the CLI refuses (a whole task's n/a is not one)."""
        return {t: e for t, e in self.not_applicable.items() if e.config is not None}

    @property
    def notes(self) -> list[str]:
        """Problems of seeds that are missing from cells that do have a value (empty cells show their reason), and
        the full reason of each refused configuration (its cells show the short one)."""
        notes: list[str] = []
        for cell in self.cells.values():
            if cell.scores:
                prefix = "" if len(self.groups) <= 1 else f"{TASK_LABELS.get(cell.column.task, cell.column.task)} "
                notes.extend(prefix + p for p in cell.problems)
            if cell.interval_reason:  # the CI cell says n/a; here is why
                notes.append(f"{cell.column.header} 95% CI n/a: {cell.interval_reason}")
        refused: dict[str, list[str]] = {}  # one note per reason, naming every config refused for it
        for entry in self.refused.values():
            refused.setdefault(entry.reason, []).append(entry.config_path or entry.name)
        notes.extend(f"n/a, lora-ft config validate refuses {', '.join(paths)}: {reason}"
                     for reason, paths in refused.items())
        for task, group in self.groups.items():
            if group.runs and group.untrained is None and (group.identity.get("task") or {}).get("select_on_scored_split"):
                prefix = "" if len(self.groups) <= 1 else f"{TASK_LABELS.get(task, task)}: "
                notes.append(f"{prefix}its selection split is its scored split (task.select_on_scored_split): the "
                             "validation loss and any choice made on it saw the scored items")
        return list(dict.fromkeys(notes))


def _table4_rows(groups: list[ConfigGroup]) -> list[Row]:
    """Merge configurations of different tasks into one row per model+method+size (never two of one task)."""
    rows: list[Row] = []
    for group in groups:
        key = (group.model, canonical_json(group.method), group.untrained)
        for row in rows:
            if (row.first.model, canonical_json(row.first.method), row.untrained) == key and group.task not in row.groups:
                row.groups[group.task] = group
                break
        else:
            rows.append(Row({group.task: group}))
    return rows


def _group_method_label(group: ConfigGroup) -> str:
    """A scored lora-ft export folder's provenance label ("merged export"), else the method's (a peft run's from the
    resolved config it recorded)."""
    run = group.runs[0] if group.runs else None
    if run is None:
        return method_label(group.method)
    scored = scored_model(run) or {}
    if scored.get("kind") == "model folder" and scored.get("label"):
        return str(scored["label"])
    return method_label(group.method, (run.results.extra.get("peft") or {}).get("config"))


def _label_rows(rows: list[Row]) -> None:
    for row in rows:
        untrained = ", untrained" if row.untrained == "method" else ""
        row.label = f"{row.first.model_name} ({_group_method_label(row.first)}{untrained})"
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
    groups: list[ConfigGroup], layout: str, *, epoch: str = "best", split: str | None = None,
    not_applicable: list[NotApplicable] = (), compare_with: str | None = None,
) -> list[Row]:
    """Rows of ``layout`` ("table3" / "table4" / "custom-<metric>") with their cells scored, paper rows matched, and best cells marked.

    ``not_applicable``: refused configs become rows (or join the row of their model + method) whose cells of that
    task say "n/a: <short reason>"; a whole task's entry fills that task's empty cells of every row the same way.
    ``compare_with``: see :func:`lora_ft.report.paper_numbers.match_paper_row`.
    """
    refused = [ConfigGroup(e.identity, [], e) for e in not_applicable if e.config is not None]
    whole_task = {e.task: e for e in not_applicable if e.config is None}
    groups = [*groups, *refused]
    if layout == "table4":
        rows = _table4_rows([g for g in groups if g.task in TASKS_TABLE4])
    else:  # Table 3 and a custom task's table: one task, a row per configuration
        rows = [Row({g.task: g}) for g in groups if g.task in LAYOUT_TASKS[layout]]
    for row in rows:
        row.not_applicable = {t: g.not_applicable for t, g in row.groups.items() if g.not_applicable is not None}
        row.not_applicable.update({t: e for t, e in whole_task.items() if t not in row.groups})
        for key in LAYOUT_COLUMNS[layout]:
            column = COLUMNS[key]
            group = row.groups.get(column.task)
            if group is None and column.task in whole_task:
                row.cells[key] = Cell(column, reasons=[whole_task[column.task].cell])
            else:
                row.cells[key] = score_cell(group, column, epoch=epoch, split=split)
        trainable = row.trainable
        totals = sorted({r.results.parameters.total for g in row.groups.values() for r in g.runs
                         if r.results.parameters is not None})
        if row.untrained is None:  # the untrained model reproduces no row of the paper
            row.paper = match_paper_row(row.first.identity, trainable[0] if len(trainable) == 1 else None,
                                        compare_with=compare_with, total=totals[0] if len(totals) == 1 else None)
    order = METHOD_ORDER.get(layout, METHOD_ORDER["table3"])
    model_rank = {"gpt2-medium": 0, "gpt2-large": 1}

    def sort_key(row: Row) -> tuple:
        method = str(row.first.method.get("name", ""))
        trainable = row.trainable
        return (
            model_rank.get(row.first.model, 2),
            row.first.model,
            row.untrained != "base",  # the base model first: the reference point of its model's rows
            order.index(method) if method in order else len(order),
            row.untrained is not None,
            statistics.fmean(trainable) if trainable else math.inf,
            canonical_json(row.first.method),
        )

    rows.sort(key=sort_key)
    _label_rows(rows)
    return rows


def _rounded(value: float, decimals: int) -> float:
    return round(value, decimals)


def mark_best(rows: list[Row], decimals: Mapping[str, int]) -> None:
    """Bold the best rounded mean of each column among the trained rows (the untrained model is the reference)."""
    for key in decimals:
        means = [(row.cells[key], row.cells[key].mean) for row in rows
                 if row.cells[key].mean is not None and row.untrained is None]
        if len(means) < 2:
            continue
        top = max(_rounded(m, decimals[key]) for _, m in means)
        for cell, m in means:
            cell.best = _rounded(m, decimals[key]) == top

