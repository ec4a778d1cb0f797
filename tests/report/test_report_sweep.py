"""Sweep expansion on the shipped sweep configs and on hand-written ones."""

from __future__ import annotations

import itertools
import shlex
from pathlib import Path

import pytest
import yaml

from lora_ft.report.sweep import (
    SweepError,
    describe_sweep,
    expand_sweep,
    format_override_value,
    launch_commands,
    load_sweep,
)

REPO = Path(__file__).resolve().parents[2]
SWEEPS = REPO / "configs" / "sweeps"


def _parse_overrides(overrides: list[str]) -> dict:
    return {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in overrides)}


def test_rank_sweep_gives_one_run_per_rank_and_seed():
    raw, runs = load_sweep(SWEEPS / "rank_sweep.yaml")
    assert raw["sweep"] == {"method.rank": [1, 2, 4, 8, 16, 64], "training.seed": [110, 111, 112]}
    assert len(runs) == 18
    combos = [(r.values["method.rank"], r.values["training.seed"]) for r in runs]
    assert sorted(combos) == sorted(itertools.product([1, 2, 4, 8, 16, 64], [110, 111, 112]))
    assert len({r.output_dir for r in runs}) == 18
    assert all(r.output_dir.startswith(raw["output"]["dir"] + "/") for r in runs)
    first = runs[0]
    assert first.name == "rank1-seed110" and first.output_dir == "runs/rank_sweep/gpt2m/rank1-seed110"
    assert _parse_overrides(first.overrides) == {"method.rank": 1, "training.seed": 110}


def test_table5_sweep_keeps_the_budget():
    raw, runs = load_sweep(SWEEPS / "table5_weight_types.yaml")
    assert len(runs) == 7 and len({r.output_dir for r in runs}) == 7
    seen = []
    for run in runs:
        values = _parse_overrides(run.overrides)
        # rank x number of weight types = 8: the paper's fixed budget.
        assert values["method.rank"] * len(values["method.targets"]) == 8
        seen.append(tuple(values["method.targets"]))
    assert seen == [("q",), ("k",), ("v",), ("o",), ("q", "k"), ("q", "v"), ("q", "k", "v", "o")]
    assert runs[5].name == "targets-q_v-rank4"


def test_table3_seed_sweep():
    raw, runs = load_sweep(SWEEPS / "table3_lora_seeds.yaml")
    assert [r.values["training.seed"] for r in runs] == [110, 111, 112]
    assert raw["method"] == {"name": "lora", "rank": 4, "alpha": 32, "dropout": 0.1, "targets": ["q", "v"]}


@pytest.mark.parametrize("path", sorted(SWEEPS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_are_full_configs_with_their_command(path: Path):
    raw = yaml.safe_load(path.read_text())
    assert {"model", "task", "method", "training", "decoding", "output", "sweep"} <= set(raw)
    assert raw["model"]["name_or_path"] == "gpt2-medium" and raw["task"]["name"] == "e2e"
    assert raw["training"]["learning_rate"] == pytest.approx(2e-4) and raw["training"]["seed"] == 110
    assert raw["decoding"] == {"num_beams": 10, "length_penalty": 0.9, "no_repeat_ngram_size": 4, "max_new_tokens": 64}
    header = path.read_text().split("\nmodel:")[0]
    assert f"lora-ft sweep --config configs/sweeps/{path.name}" in header


def test_launch_commands_quote_and_round_trip():
    _, runs = load_sweep(SWEEPS / "table5_weight_types.yaml")
    commands = launch_commands("configs/sweeps/table5_weight_types.yaml", runs, accelerate=False)
    args = shlex.split(commands[4])
    assert args[:4] == ["lora-ft", "train", "--config", "configs/sweeps/table5_weight_types.yaml"]
    assert args[4:] == ["method.targets=[q,k]", "method.rank=4", "output.dir=runs/table5/gpt2m/targets-q_k-rank4"]
    accelerated = launch_commands("x.yaml", runs[:1], accelerate=True)[0]
    assert shlex.split(accelerated)[:5] == ["accelerate", "launch", "-m", "lora_ft", "train"]
    listing = describe_sweep(runs)
    assert listing.splitlines()[0] == "7 runs" and "targets-q_k_v_o-rank2" in listing


def test_override_values_read_back_as_the_same_value():
    for value in (4, 2e-4, 1e-5, 0.1, True, None, "gpt2-medium", ["q", "v"], "yes", "a, b", [1, 2.5]):
        assert yaml.safe_load(format_override_value(value)) == value


def _base() -> dict:
    return {"method": {"name": "lora", "rank": 4}, "training": {"seed": 1}, "output": {"dir": "runs/x"}}


def test_bad_sweeps_are_clear_errors():
    with pytest.raises(SweepError, match="no top-level 'sweep:'"):
        expand_sweep(_base(), "runs/x")
    with pytest.raises(SweepError, match="not in the base config"):
        expand_sweep({**_base(), "sweep": {"method.rnk": [1, 2]}}, "runs/x")
    with pytest.raises(SweepError, match="non-empty list"):
        expand_sweep({**_base(), "sweep": {"method.rank": []}}, "runs/x")
    with pytest.raises(SweepError, match="more than one sweep entry"):
        expand_sweep({**_base(), "sweep": {"method.rank": [1], "g": [{"method.rank": 2}]}}, "runs/x")
    with pytest.raises(SweepError, match="share output folders"):
        expand_sweep({**_base(), "sweep": {"method.name": ["a/b", "a_b"]}}, "runs/x")


def test_run_sweep_command_lists_prints_and_runs(tmp_path: Path, capsys, monkeypatch):
    from lora_ft.report import sweep as sweep_module
    from lora_ft.results import RunResults, write_results

    config = tmp_path / "s.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"name_or_path": "gpt2"}, "task": {"name": "e2e"}, "method": {"name": "lora", "rank": 4},
        "training": {"seed": 1, "epochs": 5}, "output": {"dir": str(tmp_path / "runs")},
        "sweep": {"method.rank": [1, 2], "training.seed": [1, 2]},
    }))
    assert sweep_module.run_sweep_command(config, ["training.epochs=1"], dry_run=True) == 0
    assert capsys.readouterr().out.startswith("4 runs")
    assert sweep_module.run_sweep_command(config, ["training.epochs=1"], print_commands=True) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and shlex.split(lines[0])[4:] == [
        "training.epochs=1", "method.rank=1", "training.seed=1", f"output.dir={tmp_path / 'runs'}/rank1-seed1"]
    with pytest.raises(SweepError, match="swept key"):
        sweep_module.run_sweep_command(config, ["method.rank=8"], dry_run=True)

    # Running: finished runs are skipped, the others launched one by one; a failure gives exit status 1.
    done = RunResults.start("rank1-seed1", {"training": {"seed": 1}})
    done.status = "evaluated"
    write_results(tmp_path / "runs" / "rank1-seed1", done)
    calls = []
    monkeypatch.setattr(sweep_module.subprocess, "call", lambda argv: calls.append(argv) or (1 if "seed=2" in argv[-2] else 0))
    assert sweep_module.run_sweep_command(config) == 1
    out = capsys.readouterr().out
    assert "rank1-seed1: already evaluated" in out and "failed: rank1-seed2, rank2-seed2" in out
    assert len(calls) == 3 and calls[0][1:4] == ["-m", "lora_ft", "train"]
    assert calls[1][-3:] == ["method.rank=2", "training.seed=1", f"output.dir={tmp_path / 'runs'}/rank2-seed1"]
