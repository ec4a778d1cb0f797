"""Choosing a sweep's best combination on the selection split, and recording the choice where the final runs read it.

    lora-ft sweep --config configs/mini/search/table3/e2e_lora_r4.yaml --select validation_loss

trains the sweep's missing runs, then writes ``<output.dir>/selection.json``: the criterion, every combination with
its value, the chosen one, and whether it lies at the edge of a numeric grid (a best rate at the edge of its grid may
be better still beyond it: extend the grid). A final run names that file in ``training.selected_by``; `lora-ft train`
then checks that its config holds the chosen values and copies the search (grid, criterion, choice) into its
results.json, so a table can say how each row's setting was chosen.

Criteria, each computed on the selection (validation) split only, never the scored split:
- ``validation_loss``: the lowest validation loss (token-mean NLL, no label smoothing) of each run's last epoch;
- ``validation:METRIC``: the highest METRIC (e.g. ``validation:BLEU``) of the run's last evaluation on the validation
  split (`lora-ft eval --run DIR --split validation` first).
A run that failed (diverged) or has no value counts as the worst.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from lora_ft.report.sweep import SweepError, SweepRun, expand_sweep, load_sweep, run_sweep_command, train_runs
from lora_ft.results import ResultsError, read_results

SELECTION_FILE = "selection.json"
MAX_EXTENSIONS = 3  # grid steps added beyond an edge choice before the search stops and says so


@dataclass(frozen=True)
class Candidate:
    name: str
    output_dir: str
    values: dict[str, Any]
    score: float | None  # None: failed, diverged or not measured
    status: str


def parse_criterion(text: str) -> tuple[str, bool]:
    """(what is read, whether higher is better) for a criterion; SweepError names the accepted forms."""
    if text == "validation_loss":
        return text, False
    if text.startswith("validation:") and text.split(":", 1)[1]:
        return text, True
    raise SweepError(f"--select {text!r}: use validation_loss or validation:METRIC (e.g. validation:BLEU)")


def candidate_score(run_dir: str | Path, criterion: str) -> tuple[float | None, str]:
    """A run's value under `criterion` and its status ('missing' when the run has no results.json)."""
    try:
        results = read_results(run_dir)
    except ResultsError:
        return None, "missing"
    value: float | None = None
    if criterion == "validation_loss":
        if results.epochs:
            value = results.epochs[-1].validation_loss
    else:
        metric = criterion.split(":", 1)[1]
        evaluations = [e for e in results.evaluations if e.split == "validation" and metric in e.scores]
        if evaluations:
            value = evaluations[-1].scores[metric]
    if value is not None and not math.isfinite(value):
        value = None
    return value, results.status


def select(runs: Sequence[SweepRun], criterion: str) -> dict[str, Any]:
    """The selection record for `runs` (a sweep's expansion): every candidate, the chosen one and the grid edges."""
    criterion, higher_is_better = parse_criterion(criterion)
    candidates = [Candidate(r.name, r.output_dir, dict(r.values), *candidate_score(r.output_dir, criterion)) for r in runs]
    missing = [c.name for c in candidates if c.status in ("missing", "training")]
    if missing:
        raise SweepError(f"cannot select yet: {', '.join(missing)} not trained (run the sweep to the end first)")
    scored = [c for c in candidates if c.score is not None]
    if not scored:
        raise SweepError(f"no run of the sweep has a {criterion} value (all failed or diverged?)")
    chosen = (max if higher_is_better else min)(scored, key=lambda c: c.score)  # first of ties: file order
    grid = {key: list(dict.fromkeys(c.values[key] for c in candidates)) for key in chosen.values}  # distinct, in order
    at_edge = [key for key, values in grid.items()
               if len(values) >= 3 and all(_is_number(v) for v in values) and chosen.values[key] in (min(values), max(values))]
    return {
        "criterion": criterion,
        "higher_is_better": higher_is_better,
        "split": "validation",
        "grid": grid,
        "candidates": [asdict(c) for c in candidates],
        "chosen": {"name": chosen.name, "output_dir": chosen.output_dir, "values": chosen.values, "score": chosen.score},
        "at_edge_of_grid": at_edge,
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def write_selection(base_output_dir: str | Path, record: dict[str, Any]) -> Path:
    path = Path(base_output_dir) / SELECTION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def describe_selection(record: dict[str, Any]) -> str:
    """The candidates and the choice, one line each (what `lora-ft sweep --select` prints)."""
    better = "highest" if record["higher_is_better"] else "lowest"
    lines = [f"selection by {record['criterion']} on the validation split ({better} wins):"]
    for c in record["candidates"]:
        mark = "*" if c["name"] == record["chosen"]["name"] else " "
        value = "n/a (" + c["status"] + ")" if c["score"] is None else f"{c['score']:.4f}"
        lines.append(f" {mark} {c['name']}: {value}")
    chosen = ", ".join(f"{k}={v}" for k, v in record["chosen"]["values"].items())
    if record.get("extended_by"):
        lines.append(f"the grid was extended beyond its edge by {', '.join(f'{v:g}' for v in record['extended_by'])}")
    lines.append(f"chosen: {chosen}")
    for key in record["at_edge_of_grid"]:
        lines.append(f"warning: the chosen {key} is at the edge of its grid {record['grid'][key]}: extend the grid "
                     "beyond it and run the sweep again")
    return "\n".join(lines)


def read_selection(path: str | Path) -> dict[str, Any]:
    """A selection.json written by `lora-ft sweep --select`; SweepError when it is missing or not one."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepError(f"training.selected_by: no such file {path}; run `lora-ft sweep --config ... --select ...` "
                         "first") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SweepError(f"training.selected_by: {path} is not a selection file ({exc})") from None
    if not isinstance(record, dict) or not {"criterion", "chosen", "grid"} <= set(record):
        raise SweepError(f"training.selected_by: {path} is not a selection file written by `lora-ft sweep --select`")
    return record


def search_record(config: dict[str, Any]) -> dict[str, Any] | None:
    """What results.json keeps of the search that chose a run's setting (None without training.selected_by)."""
    path = config.get("training", {}).get("selected_by")
    return check_selected(config, path) if path else None


def check_selected(config: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The search record for a run whose config names `path` in training.selected_by: its chosen values must be the
    config's (a rate typed by hand that differs from the search's choice is refused, not recorded as searched)."""
    record = read_selection(path)
    for key, value in record["chosen"]["values"].items():
        node: Any = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node != value:
            raise SweepError(
                f"training.selected_by: {path} chose {key}={value!r}, but this config has {key}={node!r}; set it to "
                "the chosen value, or drop training.selected_by"
            )
    return {"file": str(path), "criterion": record["criterion"], "split": record.get("split", "validation"),
            "grid": record["grid"], "chosen": record["chosen"]["values"], "chosen_score": record["chosen"]["score"],
            "at_edge_of_grid": record.get("at_edge_of_grid", [])}


def run_sweep_and_select(config_path: str | Path, overrides: Sequence[str], criterion: str,
                         max_extensions: int = MAX_EXTENSIONS) -> int:
    """``lora-ft sweep --select CRITERION``: train the sweep's missing runs, then choose and write selection.json.
    A run that diverged at a high rate is a finding, not a reason to stop: it counts as the worst candidate. A choice
    at the edge of a one-key numeric grid extends the grid one step beyond it (the same ratio as its last step), up to
    `max_extensions` times: the best rate may lie beyond the grid."""
    parse_criterion(criterion)  # a bad criterion fails before any run starts
    raw, runs = load_sweep(config_path, overrides)
    run_sweep_command(config_path, overrides)
    record = select(runs, criterion)
    extensions = []
    while record["at_edge_of_grid"] and len(raw["sweep"]) == 1 and len(extensions) < max_extensions:
        key = record["at_edge_of_grid"][0]
        value = next_grid_value(record["grid"][key], record["chosen"]["values"][key])
        print(f"the chosen {key} is at the edge of {record['grid'][key]}: extending the grid to {value:g}", flush=True)
        [extra] = expand_sweep({**raw, "sweep": {key: [value]}}, raw["output"]["dir"])
        train_runs(config_path, [extra], overrides)
        runs, extensions = [*runs, extra], [*extensions, value]
        record = select(runs, criterion)
    record["extended_by"] = extensions
    print(describe_selection(record))
    print(f"wrote {write_selection(raw['output']['dir'], record)}")
    return 0


def next_grid_value(values: Sequence[float], chosen: float) -> float:
    """One step beyond `chosen`, an end of the numeric grid `values`, by the ratio of the grid's step there (3 significant
    digits): [2e-4, 6e-4, 2e-3, 6e-3] at 6e-3 -> 1.8e-2; at 2e-4 -> 6.67e-5."""
    ordered = sorted(values)
    neighbour = ordered[-2] if chosen == ordered[-1] else ordered[1]
    return float(f"{chosen * chosen / neighbour:.3g}")
