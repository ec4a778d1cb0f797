"""Run directories for the reports: find and read them, and group their seeds into configurations.

A configuration is a resolved config without what differs between its seeds (``training.seed``, the ``output`` and
``sweep`` sections); the rules of the table built from them are in :mod:`lora_ft.report.table`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from lora_ft.errors import UserError
from lora_ft.report.paper_numbers import GPT2_MODELS, model_key
from lora_ft.results import RESULTS_FILENAME, ResultsError, RunResults, read_results

SCORED_KEY = "scored_model"  # lora_ft.scored_model.SCORED_KEY: results.json's record of a scored adapter or folder


class ReportError(UserError, ValueError):
    """The runs given cannot make the requested table, plot or analysis (the message says why and what to do)."""


@dataclass
class LoadedRun:
    run_dir: Path
    results: RunResults

    @property
    def task(self) -> str:
        return str((self.results.config.get("task") or {}).get("name", "")).lower()

    @property
    def seed(self) -> Any:
        seed = self.results.seed
        return seed if seed is not None else (self.results.config.get("training") or {}).get("seed")

    @property
    def seed_label(self) -> str:
        return f"seed {self.seed}" if self.seed is not None else self.run_dir.name

    @property
    def untrained(self) -> str | None:
        """"base" for the untrained base model's scores (`lora-ft eval --config --base`), "method" for the config's
        method applied but not trained (its predictions file says "untrained"), None for a trained run."""
        if not untrained_only(self.results):
            return None
        files = [str(e.predictions_file or "") for e in self.results.evaluations]
        return "method" if any(f.endswith("-untrained.txt") for f in files) else "base"


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
            results = read_results(run_dir)
        except ResultsError as exc:
            skipped.append(Skipped(run_dir, str(exc)))
            continue
        loaded.append(LoadedRun(run_dir, results))
    return loaded, skipped


def untrained_only(results: RunResults) -> bool:
    """A run directory `lora-ft eval --config` made: no training epochs, only epoch-0 (untrained) evaluations."""
    return not results.epochs and bool(results.evaluations) and all(ev.epoch == 0 for ev in results.evaluations)


def scored_model(run: LoadedRun) -> dict[str, Any] | None:
    """The provenance of a model `lora-ft eval --config` scored (an adapter or a model folder), or None."""
    record = run.results.extra.get(SCORED_KEY)
    return record if isinstance(record, dict) else None


def config_identity(config: Mapping[str, Any], untrained: str | None = None) -> dict[str, Any]:
    """The config without what differs between seeds of one configuration (seed, output section, sweep).

    An untrained model's scores (``untrained``: "base" or "method", :attr:`LoadedRun.untrained`) are never a seed of the
    method its config names: they keep only what decides them (model, task, decoding; the method unless "base")."""
    if untrained is not None:
        kept = {k: copy.deepcopy(config[k]) for k in ("model", "task", "method", "decoding") if k in config}
        if untrained == "base":
            kept["method"] = {"name": "base"}
        return {**kept, "untrained": untrained}
    identity = copy.deepcopy(dict(config))
    identity.pop("output", None)
    identity.pop("sweep", None)
    training = identity.get("training")
    if isinstance(training, dict):
        training.pop("seed", None)
    return identity



def canonical_json(obj: Any) -> str:
    """One text per value, whatever the key order: the identity of a config (section) when grouping and sorting."""
    return json.dumps(obj, sort_keys=True, default=str)


@dataclass
class ConfigGroup:
    """Runs of one configuration (its seeds), or a configuration that was not run because it cannot apply."""

    identity: dict[str, Any]
    runs: list[LoadedRun] = field(default_factory=list)
    # A not_applicable.NotApplicable (not imported: that module builds on this one): no runs, cells say "n/a: <why>".
    not_applicable: Any = None

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

    @property
    def untrained(self) -> str | None:
        """"base" / "method" for an untrained model's scores (:func:`config_identity`), None for trained runs."""
        return self.identity.get("untrained")

    def runs_by_seed(self) -> dict[str, list[LoadedRun]]:
        """The runs of each distinct seed, by seed label: two copies of one seed are one seed, not two (a run without
        a recorded seed counts as a seed of its own)."""
        by_seed: dict[str, list[LoadedRun]] = {}
        for run in self.runs:
            key = run.seed_label if run.seed is not None else f"run {run.run_dir}"
            by_seed.setdefault(key, []).append(run)
        return by_seed

    def trainable_counts(self) -> list[int]:
        return sorted({r.results.parameters.trainable for r in self.runs if r.results.parameters is not None})


def group_runs(runs: Sequence[LoadedRun]) -> list[ConfigGroup]:
    """Group runs by :func:`config_identity`, in order of first appearance."""
    groups: dict[str, ConfigGroup] = {}
    for run in runs:
        identity = config_identity(run.results.config, run.untrained)
        # Scored folders are models of their own even under one config (two adapters of one method and size).
        where = (scored_model(run) or {}).get("path")
        groups.setdefault(canonical_json([identity, where]), ConfigGroup(identity)).runs.append(run)
    return list(groups.values())
