"""Rows and columns a table cannot fill, and why: the ``not_applicable.tsv`` files beside the runs.

``scripts/mini_paper.sh`` writes one line per thing it did not run, tab-separated, ``name<TAB>config<TAB>reason``:

- a config the CLI refuses (``lora-ft config validate`` fails, e.g. BitFit on a model without bias vectors):
  ``mnli_bitfit<TAB>configs/mini/table4/mnli_bitfit.yaml<TAB>config error: configs/...yaml: method.name: bitfit cannot
  apply: llama models have no bias vectors (...); choose another method (e.g. lora)``. The table shows it as a row
  (labelled from the config's model and method) whose cells of that task say "n/a: <short reason>"; the full reason
  goes in the row's notes. A relative config path is read from the working directory, else from the folder holding
  the tsv or one above it (the script writes paths relative to the repository root).
- a whole task (config ``-``, name ``task:<task>``), e.g. ``task:wikisql<TAB>-<TAB>tables not available offline (...)``:
  every row's cells of that task say "n/a: <short reason>", and a note under the table gives the full reason.

The short reason (:func:`short_reason`) is the message's head clause: after the last ``": "`` that comes before the
first ``" ("`` or ``"; "`` (a message reads "<key>: <what is wrong> (<detail>); <fix>"), at most 60 characters.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from lora_ft.errors import UserError
from lora_ft.report.runs import Skipped, canonical_json, config_identity

FILENAME = "not_applicable.tsv"
TASK_PREFIX = "task:"
SHORT_LIMIT = 60


def short_reason(reason: str) -> str:
    """The head clause of a one-line refusal: "...: bitfit cannot apply: llama models have no bias vectors (e.g.
    ...); choose ..." -> "llama models have no bias vectors"."""
    text = " ".join(reason.split())
    cut = min((i for i in (text.find(" ("), text.find("; ")) if i >= 0), default=len(text))
    head = text[:cut]
    head = head[head.rfind(": ") + 2:] if ": " in head else head
    return head if len(head) <= SHORT_LIMIT else head[: SHORT_LIMIT - 3] + "..."


@dataclass
class NotApplicable:
    """One line of a not_applicable.tsv: a refused config (``config`` set) or a whole task (``config`` None)."""

    name: str
    task: str
    reason: str  # the full one-line reason, without the "config error: <config path>: " prefix
    source: Path  # the tsv it came from
    config_path: str | None = None
    config: dict[str, Any] | None = None  # the config as resolved by lora_ft.config (raw YAML if that refuses it)

    @property
    def short(self) -> str:
        return short_reason(self.reason)

    @property
    def cell(self) -> str:
        """What an empty cell of this task says."""
        return f"n/a: {self.short}"

    @property
    def identity(self) -> dict[str, Any]:
        return config_identity(self.config or {})


def find_tsv_files(paths: Iterable[str | Path]) -> list[Path]:
    """``not_applicable.tsv`` in each given folder and below it (a run directory holds none; searching it is cheap)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(path.rglob(FILENAME)))
    return list(dict.fromkeys(p.resolve() for p in found))


def _find_config(text: str, tsv: Path) -> Path | None:
    path = Path(text)
    if path.is_absolute():
        return path if path.is_file() else None
    for base in (Path.cwd(), *tsv.parents):
        if (base / path).is_file():
            return base / path
    return None


def _read_config(path: Path) -> dict[str, Any]:
    """The resolved config (the shape results.json stores), or the raw YAML when lora_ft.config refuses it."""
    from lora_ft.config import load_config, read_yaml

    try:
        return load_config(path).to_dict()
    except UserError:
        return copy.deepcopy(read_yaml(path))


def _strip_prefix(reason: str, config_path: str) -> str:
    for prefix in ("lora-ft: ", "config error: ", f"{config_path}: "):
        if reason.startswith(prefix):
            reason = reason[len(prefix):]
    return reason


def read_not_applicable(paths: Iterable[str | Path]) -> tuple[list[NotApplicable], list[Skipped]]:
    """Every entry of the not_applicable.tsv files under ``paths``; lines that cannot be used come back as Skipped.

    A later line for the same config or task (a rerun's) replaces an earlier one."""
    entries: dict[str, NotApplicable] = {}
    skipped: list[Skipped] = []
    for tsv in find_tsv_files(paths):
        for number, line in enumerate(tsv.read_text(encoding="utf-8-sig").splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split("\t")
            where = f"{tsv} line {number}"
            if len(parts) != 3 or not all(p.strip() for p in parts):
                skipped.append(Skipped(tsv, f"line {number}: expected name<TAB>config<TAB>reason, got {line!r}"))
                continue
            name, config_text, reason = (p.strip() for p in parts)
            if name.startswith(TASK_PREFIX):
                task = name[len(TASK_PREFIX):].lower()
                entries[f"task {task}"] = NotApplicable(name, task, reason, tsv)
                continue
            config_file = _find_config(config_text, tsv)
            if config_file is None:
                skipped.append(Skipped(tsv, f"line {number}: config {config_text} not found (from {where})"))
                continue
            try:
                config = _read_config(config_file)
            except UserError as exc:
                skipped.append(Skipped(tsv, f"line {number}: {exc}"))
                continue
            task = str((config.get("task") or {}).get("name", "")).lower()
            entry = NotApplicable(name, task, _strip_prefix(reason, config_text), tsv, config_text, config)
            entries[canonical_json(entry.identity)] = entry
    return list(entries.values()), skipped
