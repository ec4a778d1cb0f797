"""How each table row's learning rate was set: searched (a run trained with ``training.selected_by`` keeps the search
in results.json ``extra.search``, see :mod:`lora_ft.report.selection`) or not searched."""

from __future__ import annotations

from typing import Any

from lora_ft.report.cells import TASK_LABELS
from lora_ft.report.runs import ConfigGroup, canonical_json

RATE_KEY = "training.learning_rate"


def format_rate(value: Any) -> str:
    """2e-3, 6e-4, 2.5e-4: short, as rates are written in papers (anything not a number as it is)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    mantissa, exponent = f"{value:.3e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def criterion_text(criterion: str) -> str:
    """validation_loss -> "validation loss", validation:BLEU -> "validation BLEU"."""
    return "validation loss" if criterion == "validation_loss" else criterion.replace(":", " ", 1)


def searches(group: ConfigGroup) -> list[dict[str, Any]]:
    """The distinct search records of a configuration's runs (one, unless its seeds were trained from different files)."""
    found = [r.results.extra.get("search") for r in group.runs]
    unique = {canonical_json(s): s for s in found if isinstance(s, dict)}
    return list(unique.values())


def search_text(search: dict[str, Any]) -> str:
    """"searched: 4 rates 2e-4..6e-3 by validation loss" (plus any other swept key, and a choice at the grid's edge)."""
    grid = search.get("grid") or {}
    parts = []
    for key, values in grid.items():
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        what = "rates" if key == RATE_KEY else f"{key} values"
        span = f" {format_rate(min(numbers))}..{format_rate(max(numbers))}" if len(numbers) == len(values) else ""
        parts.append(f"{len(values)} {what}{span}")
    text = f"searched: {', '.join(parts) or 'no grid'} by {criterion_text(str(search.get('criterion', '?')))}"
    if search.get("at_edge_of_grid"):
        text += " (at the grid's edge)"
    return text


def group_text(group: ConfigGroup) -> str:
    """"2e-3, searched: 4 rates 2e-4..6e-3 by validation loss", "5e-4, not searched", or "-" (nothing was trained)."""
    if group.untrained is not None or not group.runs:
        return "-"
    rate = (group.identity.get("training") or {}).get("learning_rate")
    rate = "lr ?" if rate is None else format_rate(rate)  # a hand-made config may not name it
    found = searches(group)
    if not found:
        return f"{rate}, not searched"
    text = f"{rate}, {search_text(found[0])}"
    return text if len(found) == 1 else f"{text} (its seeds name {len(found)} different searches)"


def row_text(groups: dict[str, ConfigGroup]) -> str:
    """One row's LR cell: its configuration's text, or each task's ("MNLI-m: ...; SAMSum: ...") when they differ."""
    texts = {task: group_text(group) for task, group in groups.items()}
    if len(set(texts.values())) <= 1:
        return next(iter(texts.values()), "-")
    return "; ".join(f"{TASK_LABELS.get(task, task)}: {text}" for task, text in texts.items())


def row_record(groups: dict[str, ConfigGroup]) -> dict[str, Any]:
    """task -> the learning rate, its text and the full search records (JSON)."""
    return {task: {"learning_rate": (group.identity.get("training") or {}).get("learning_rate"),
                   "text": group_text(group), "searches": searches(group)}
            for task, group in groups.items()}
