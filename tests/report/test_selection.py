"""`lora-ft sweep --select`: the best combination on the selection split, the grid's edges, and `training.selected_by`,
which checks a final run's config against the choice and keeps the search in its results.json (issue 16, item 2)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from lora_ft.report.selection import check_selected, describe_selection, select, write_selection
from lora_ft.report.sweep import SweepError, load_sweep
from lora_ft.results import EpochRecord, Evaluation, RunResults, write_results


def sweep_file(tmp_path: Path, rates=(1e-4, 3e-4, 1e-3, 3e-3)) -> Path:
    config = {"model": {"name_or_path": "gpt2"}, "task": {"name": "e2e"},
              "method": {"name": "lora", "rank": 4}, "training": {"learning_rate": 1e-4, "seed": 1},
              "output": {"dir": str(tmp_path / "search")}, "sweep": {"training.learning_rate": list(rates)}}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def finish(run_dir: str, validation_loss: float | None, *, status="trained", bleu: float | None = None) -> None:
    results = RunResults.start(Path(run_dir).name, {})
    results.status = status
    if validation_loss is not None:
        results.add_epoch(EpochRecord(epoch=1, step=100, train_loss=3.0, validation_loss=validation_loss))
    if bleu is not None:
        results.add_evaluation(Evaluation(split="validation", epoch=None, scores={"BLEU": bleu}))
        results.add_evaluation(Evaluation(split="test", epoch=None, scores={"BLEU": 99.0}))  # never read
    write_results(run_dir, results)


def test_the_lowest_validation_loss_wins_and_a_diverged_rate_is_the_worst(tmp_path):
    _, runs = load_sweep(sweep_file(tmp_path))
    for run, loss in zip(runs, (2.0, 1.5, 1.7, None)):
        finish(run.output_dir, loss, status="failed" if loss is None else "trained")
    record = select(runs, "validation_loss")
    assert record["chosen"]["values"] == {"training.learning_rate": 3e-4}
    assert record["chosen"]["score"] == 1.5
    assert record["grid"] == {"training.learning_rate": [1e-4, 3e-4, 1e-3, 3e-3]}
    assert record["at_edge_of_grid"] == []
    assert [c["status"] for c in record["candidates"]] == ["trained", "trained", "trained", "failed"]
    assert "* learning_rate0.0003: 1.5000" in describe_selection(record)
    assert "n/a (failed)" in describe_selection(record)


def test_a_choice_at_the_edge_of_the_grid_says_extend_it(tmp_path):
    _, runs = load_sweep(sweep_file(tmp_path))
    for run, loss in zip(runs, (2.0, 1.9, 1.8, 1.7)):
        finish(run.output_dir, loss)
    record = select(runs, "validation_loss")
    assert record["chosen"]["values"] == {"training.learning_rate": 3e-3}
    assert record["at_edge_of_grid"] == ["training.learning_rate"]
    assert "at the edge of its grid" in describe_selection(record)


def test_a_metric_criterion_reads_only_the_validation_split(tmp_path):
    _, runs = load_sweep(sweep_file(tmp_path, rates=(1e-4, 3e-4)))
    finish(runs[0].output_dir, 1.0, bleu=50.0)
    finish(runs[1].output_dir, 2.0, bleu=60.0)
    assert select(runs, "validation:BLEU")["chosen"]["name"] == runs[1].name  # higher wins; test's 99 unread
    assert select(runs, "validation_loss")["chosen"]["name"] == runs[0].name


def test_selecting_before_the_sweep_ends_or_by_a_bad_criterion_is_refused(tmp_path):
    _, runs = load_sweep(sweep_file(tmp_path))
    finish(runs[0].output_dir, 2.0)
    with pytest.raises(SweepError, match="not trained"):
        select(runs, "validation_loss")
    with pytest.raises(SweepError, match="use validation_loss or validation:METRIC"):
        select(runs, "test:BLEU")


def test_selected_by_checks_the_config_against_the_choice(tmp_path):
    _, runs = load_sweep(sweep_file(tmp_path))
    for run, loss in zip(runs, (2.0, 1.5, 1.7, 1.9)):
        finish(run.output_dir, loss)
    path = write_selection(tmp_path / "search", select(runs, "validation_loss"))
    search = check_selected({"training": {"learning_rate": 3e-4}}, path)
    assert search["chosen"] == {"training.learning_rate": 3e-4} and search["criterion"] == "validation_loss"
    assert search["grid"]["training.learning_rate"] == [1e-4, 3e-4, 1e-3, 3e-3]
    with pytest.raises(SweepError, match="chose training.learning_rate=0.0003, but this config has "
                                         "training.learning_rate=0.001"):
        check_selected({"training": {"learning_rate": 1e-3}}, path)
    with pytest.raises(SweepError, match="no such file"):
        check_selected({}, tmp_path / "missing.json")


@pytest.mark.slow
def test_a_trained_run_keeps_its_search_in_results_json(tmp_path):
    from tiny_runs import tiny_run_config

    from lora_ft.config import config_from_dict
    from lora_ft.train import train

    _, runs = load_sweep(sweep_file(tmp_path))
    for run, loss in zip(runs, (2.0, 1.5, 1.7, 1.9)):
        finish(run.output_dir, loss)
    path = write_selection(tmp_path / "search", select(runs, "validation_loss"))
    config = tiny_run_config(tmp_path / "final", epochs=1, max_steps=2, learning_rate=3e-4, selected_by=str(path))
    run_dir = train(config_from_dict(config))
    search = json.loads((Path(run_dir) / "results.json").read_text())["extra"]["search"]
    assert search["chosen"] == {"training.learning_rate": 3e-4} and math.isclose(search["chosen_score"], 1.5)


@pytest.mark.parametrize("best_rate, extended_by, chosen, at_edge", [
    (2e-2, [9e-3, 2.7e-2, 8.1e-2], 2.7e-2, []),  # inside the grid after three steps of its own ratio (x 3)
    (1.0, [9e-3, 2.7e-2, 8.1e-2], 8.1e-2, ["training.learning_rate"]),  # still at the edge: stops, and says so
])
def test_a_choice_at_the_edge_extends_the_grid(tmp_path, monkeypatch, best_rate, extended_by, chosen, at_edge):
    """Validation loss falls up to `best_rate` and rises after: the grid [1e-4, 3e-4, 1e-3, 3e-3] is extended beyond
    its edge by its own step, at most MAX_EXTENSIONS (3) times; the record keeps the extension."""
    from lora_ft.report import selection

    def fake_loss(rate: float) -> float:
        return abs(math.log10(rate) - math.log10(best_rate)) + 1.0

    def fake_train(config_path, runs, overrides=(), **kwargs):
        for run in runs:
            finish(run.output_dir, fake_loss(run.values["training.learning_rate"]))
        return []

    path = sweep_file(tmp_path)
    monkeypatch.setattr(selection, "train_runs", fake_train)
    monkeypatch.setattr(selection, "run_sweep_command", lambda config, overrides: fake_train(config, load_sweep(config)[1]))
    assert selection.run_sweep_and_select(path, [], "validation_loss") == 0
    record = json.loads((tmp_path / "search" / "selection.json").read_text())
    assert record["extended_by"] == extended_by
    assert record["chosen"]["values"] == {"training.learning_rate": chosen}
    assert record["at_edge_of_grid"] == at_edge
    assert (tmp_path / "search" / "learning_rate0.081" / "results.json").is_file()


def test_the_next_grid_value_steps_by_the_grids_own_ratio():
    from lora_ft.report.selection import next_grid_value

    assert next_grid_value([2e-4, 6e-4, 2e-3, 6e-3], 6e-3) == 1.8e-2
    assert next_grid_value([2e-4, 6e-4, 2e-3, 6e-3], 2e-4) == 6.67e-5
