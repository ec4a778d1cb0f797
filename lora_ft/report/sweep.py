"""Sweeps: one config file with a top-level ``sweep:`` mapping becomes one run per combination.

Two kinds of entries, combined as a grid (Cartesian product, in file order, the last entry varying fastest):

```yaml
sweep:
  method.rank: [1, 2, 4, 8, 16, 64]     # a dotted config key and its values
  training.seed: [110, 111, 112]
  weights:                               # a linked group: any label, a list of mappings; each mapping is
    - {method.targets: [q], method.rank: 8}       # one choice that sets several keys together
    - {method.targets: [q, v], method.rank: 4}
```

Each combination gets a name made of its values (``rank4-seed110``, ``targets-q_v-rank4``) and its own
output folder ``<base>/<name>``. Every swept key must already exist in the base config (a typo would
otherwise only show up when the launched runs fail). The commands printed are
``lora-ft train --config FILE key=value ... output.dir=DIR``: the training command must ignore the
top-level ``sweep:`` section of the file, or the sweep has to be removed first.
"""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from lora_ft.results import ResultsError, read_results
from lora_ft.schema import ConfigError
from lora_ft.yaml12 import dump_yaml, load_yaml


@dataclass(frozen=True)
class SweepRun:
    """One combination: its name, the ``key=value`` overrides, and its output folder."""

    name: str
    overrides: list[str]
    output_dir: str
    values: dict[str, Any]  # dotted key -> value, as set by this combination


class SweepError(ConfigError):
    """The ``sweep:`` section is malformed (a config error: the CLI reports it without a traceback)."""


def _get_dotted(config: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _check_key(config: Mapping[str, Any], dotted: str) -> None:
    if "." not in dotted:
        raise SweepError(f"sweep key {dotted!r}: expected a dotted config key such as 'method.rank'")
    exists, _ = _get_dotted(config, dotted)
    if not exists:
        section = dotted.rsplit(".", 1)[0]
        found, node = _get_dotted(config, section)
        have = ", ".join(sorted(node)) if found and isinstance(node, Mapping) else "none"
        raise SweepError(
            f"sweep key {dotted!r} is not in the base config (keys of {section!r}: {have}); "
            "fix the spelling or add the key with its default value"
        )


def format_override_value(value: Any) -> str:
    """A value as the right-hand side of ``key=value`` (YAML flow: ``4``, ``2e-4``, ``[q,v]``, ``true``).

    Raises :class:`SweepError` when the text would not read back as the same value.
    """
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, (int, float)):
        text = repr(value)
        if isinstance(value, float) and "e" in text and "." not in text:
            # YAML 1.1 readers take 1e-05 for a string; 1.0e-05 is a float in both versions.
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
    elif isinstance(value, (list, tuple)):
        text = "[" + ",".join(format_override_value(v) for v in value) + "]"
    elif isinstance(value, str):
        text = value
        try:  # plain only where YAML 1.2 (lora-ft's overrides) and 1.1 (other tools) both read the text itself
            plain_ok = load_yaml(value) == value == yaml.safe_load(value) and "," not in value and value.strip() == value
        except yaml.YAMLError:
            plain_ok = False
        if not plain_ok:
            text = dump_yaml(value, default_flow_style=True).strip().removesuffix("\n...").strip()
    else:
        raise SweepError(f"cannot sweep a value of type {type(value).__name__}: {value!r}")
    try:  # what `lora-ft train` will read from the printed override
        same = load_yaml(text) == (list(value) if isinstance(value, tuple) else value)
    except yaml.YAMLError:
        same = False
    if not same:
        raise SweepError(f"value {value!r} does not survive the round trip through {text!r}")
    return text


def _name_part(dotted: str, value: Any) -> str:
    key = dotted.rsplit(".", 1)[-1]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        text = "_".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
        return f"{key}-{text}"
    return f"{key}{value}"


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def _axes(raw_config: Mapping[str, Any]) -> list[list[dict[str, Any]]]:
    """Each sweep entry as a list of choices; a choice maps dotted keys to values."""
    sweep = raw_config.get("sweep")
    if sweep is None:
        raise SweepError("the config has no top-level 'sweep:' section")
    if not isinstance(sweep, Mapping) or not sweep:
        raise SweepError("'sweep:' must be a non-empty mapping of dotted keys to lists of values")
    axes: list[list[dict[str, Any]]] = []
    seen: set[str] = set()
    for entry, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"sweep entry {entry!r}: expected a non-empty list of values, got {values!r}")
        if all(isinstance(v, Mapping) for v in values):
            choices = [dict(v) for v in values]  # linked group
            keys = set(choices[0])
            for choice in choices:
                if set(choice) != keys:
                    raise SweepError(f"sweep group {entry!r}: every choice must set the same keys ({sorted(keys)})")
        elif any(isinstance(v, Mapping) for v in values):
            raise SweepError(f"sweep entry {entry!r}: mixes mappings and plain values")
        else:
            keys = {str(entry)}
            choices = [{str(entry): v} for v in values]
        for key in keys:
            _check_key(raw_config, key)
            if key in seen:
                raise SweepError(f"sweep key {key!r} appears in more than one sweep entry")
            seen.add(key)
        axes.append(choices)
    return axes


def expand_sweep(raw_config: Mapping[str, Any], base_output_dir: str) -> list[SweepRun]:
    """One :class:`SweepRun` per combination of the config's ``sweep:`` section (see module docstring)."""
    axes = _axes(raw_config)
    runs: list[SweepRun] = []
    for combination in itertools.product(*axes):
        values: dict[str, Any] = {}
        for choice in combination:
            values.update(choice)
        name = _safe_name("-".join(_name_part(k, v) for k, v in values.items()))
        overrides = [f"{k}={format_override_value(v)}" for k, v in values.items()]
        output_dir = f"{base_output_dir.rstrip('/')}/{name}"
        runs.append(SweepRun(name, overrides, output_dir, values))
    dirs = [r.output_dir for r in runs]
    duplicates = sorted({d for d in dirs if dirs.count(d) > 1})
    if duplicates:
        raise SweepError(f"sweep combinations share output folders {duplicates}: make the swept values distinct")
    return runs


def load_sweep(config_path: str | Path, overrides: Sequence[str] = ()) -> tuple[dict[str, Any], list[SweepRun]]:
    """Read a sweep config file, apply command-line ``overrides`` (``key=value``, not to swept keys), and expand
    it under its ``output.dir``."""
    from lora_ft.config import read_yaml  # the reader of `lora-ft train`: YAML 1.2, one-line errors

    path = Path(config_path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: expected a mapping at the top level")
    if overrides:
        from lora_ft.config import apply_overrides  # the same key=value parser as `lora-ft train`

        swept = {key for choices in _axes(raw) for key in choices[0]}
        clashing = [o for o in overrides if o.split("=", 1)[0] in swept]
        if clashing:
            raise SweepError(f"{path}: {', '.join(clashing)} set(s) a swept key; change the sweep: section instead")
        raw = apply_overrides(raw, list(overrides))
    found, base = _get_dotted(raw, "output.dir")
    if not found or not isinstance(base, str) or not base:
        raise SweepError(f"{path}: a sweep needs 'output.dir' (the folder under which each run gets its own folder)")
    try:
        return raw, expand_sweep(raw, base)
    except SweepError as exc:
        raise SweepError(f"{path}: {exc}") from exc


def _train_args(config_path: str | Path, run: SweepRun, extra_overrides: Sequence[str]) -> list[str]:
    return ["train", "--config", str(config_path), *extra_overrides, *run.overrides, f"output.dir={run.output_dir}"]


def launch_commands(
    config_path: str | Path, runs: Sequence[SweepRun], accelerate: bool = False, extra_overrides: Sequence[str] = ()
) -> list[str]:
    """One shell command per run (arguments quoted), for a cluster scheduler or a shell loop.

    ``lora-ft train --config FILE [extra overrides] key=value ... output.dir=DIR``, or with ``accelerate=True``
    ``accelerate launch -m lora_ft train ...``. Each run still needs ``lora-ft eval --run DIR`` afterwards.
    """
    prefix = ["accelerate", "launch", "-m", "lora_ft"] if accelerate else ["lora-ft"]
    return [shlex.join([*prefix, *_train_args(config_path, run, extra_overrides)]) for run in runs]


def describe_sweep(runs: Sequence[SweepRun]) -> str:
    """A dry-run listing: one line per run with its output folder and overrides."""
    width = max((len(r.name) for r in runs), default=0)
    dir_width = max((len(r.output_dir) for r in runs), default=0)
    lines = [f"{len(runs)} runs"]
    for run in runs:
        lines.append(f"  {run.name:<{width}}  {run.output_dir:<{dir_width}}  {' '.join(run.overrides)}")
    return "\n".join(lines)


def sweep_command(
    config_path: str | Path, overrides: Sequence[str] = (), *, accelerate: bool = False, dry_run: bool = False
) -> str:
    """Text for ``lora-ft sweep``: the listing with ``dry_run``, else one launch command per line."""
    _, runs = load_sweep(config_path, overrides)
    if dry_run:
        return describe_sweep(runs) + "\n"
    return "\n".join(launch_commands(config_path, runs, accelerate, overrides)) + "\n"


def _finished(output_dir: str) -> str | None:
    """"trained" / "evaluated" if the run directory already holds a finished run, else None."""
    try:
        status = read_results(output_dir).status
    except ResultsError:
        return None
    return status if status in ("trained", "evaluated") else None


def train_runs(config_path: str | Path, runs: Sequence[SweepRun], overrides: Sequence[str] = (), *,
               accelerate: bool = False) -> list[str]:
    """Train `runs` one after another (a finished one is skipped); the names of those that failed."""
    # sys.executable rather than the `lora-ft` script: the same environment, whether or not it is on PATH.
    prefix = [sys.executable, "-m", "lora_ft"]
    if accelerate:
        prefix = [sys.executable, "-m", "accelerate.commands.launch", "-m", "lora_ft"]
    failed: list[str] = []
    for index, run in enumerate(runs, start=1):
        done = _finished(run.output_dir)
        if done is not None:
            print(f"[{index}/{len(runs)}] {run.name}: already {done} in {run.output_dir}, skipped", flush=True)
            continue
        argv = [*prefix, *_train_args(config_path, run, overrides)]
        print(f"[{index}/{len(runs)}] {run.name}: {shlex.join(argv)}", flush=True)
        if subprocess.call(argv) != 0:
            failed.append(run.name)
    return failed


def run_sweep_command(
    config_path: str | Path,
    overrides: Sequence[str] = (),
    *,
    dry_run: bool = False,
    print_commands: bool = False,
    accelerate: bool = False,
) -> int:
    """``lora-ft sweep``: list the runs (``dry_run``), print their commands (``print_commands``), or train them
    one after another on this machine. Runs whose folder already holds a finished run are skipped, so an
    interrupted sweep continues where it stopped. Returns the exit status (1 if any run failed).
    """
    _, runs = load_sweep(config_path, overrides)
    if dry_run:
        print(describe_sweep(runs))
        return 0
    if print_commands:
        print("\n".join(launch_commands(config_path, runs, accelerate, overrides)))
        return 0
    failed = train_runs(config_path, runs, overrides, accelerate=accelerate)
    print(f"sweep: {len(runs) - len(failed)} of {len(runs)} runs trained or already finished"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    print("next: `lora-ft eval --run DIR --epochs all` for each run, then `lora-ft table --runs "
          f"{Path(runs[0].output_dir).parent}`")
    return 1 if failed else 0
