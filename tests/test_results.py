"""results.json: schema round trip, atomic writes, clear errors, environment."""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path

import pytest
import torch

from lora_ft.results import (
    SCHEMA_VERSION,
    EpochRecord,
    Evaluation,
    ParameterCounts,
    ResultsError,
    RunResults,
    collect_environment,
    read_results,
    record_evaluation,
    results_path,
    write_json_atomic,
    write_results,
    write_text_atomic,
)

CONFIG = {
    "model": {"name_or_path": "gpt2-medium"},
    "task": {"name": "e2e"},
    "method": {"name": "lora", "rank": 4, "alpha": 32, "targets": ["q", "v"]},
    "training": {"seed": 110},
    "output": {"dir": "runs/x"},
    "decoding": {"num_beams": 10},
}


def _full_results() -> RunResults:
    results = RunResults.start("lora-r4", CONFIG, environment={"versions": {"torch": "x"}})
    results.parameters = ParameterCounts(393_216, 355_216_384, {"lora_A": 196_608, "lora_B": 196_608})
    results.add_epoch(EpochRecord(1, 5258, 2.1, 1.30, 1.6e-4, 100.0))
    results.add_epoch(EpochRecord(2, 10516, 1.9, 1.20, 1.2e-4, 200.0))
    results.add_epoch(EpochRecord(3, 15774, 1.8, 1.25, 0.8e-4, 300.0))
    results.add_evaluation(Evaluation("test", 2, {"BLEU": 70.1, "NIST": 8.8}, "predictions/test-epoch2.txt", 630,
                                      {"num_beams": 10, "length_penalty": 0.9}))
    results.status = "evaluated"
    results.wall_time_s = 1234.5
    results.peak_memory_bytes = 12_345_678
    return results


def test_round_trip_through_dict_and_file(tmp_path: Path):
    results = _full_results()
    assert results.seed == 110 and results.best_epoch == 2  # lowest validation loss: 1.20 at epoch 2
    assert RunResults.from_dict(results.to_dict()) == results
    write_results(tmp_path / "run", results)
    back = read_results(tmp_path / "run")
    assert back == results
    on_disk = json.loads(results_path(tmp_path / "run").read_text())
    assert on_disk["schema_version"] == SCHEMA_VERSION
    assert on_disk["evaluations"][0]["scores"] == {"BLEU": 70.1, "NIST": 8.8}
    assert on_disk["parameters"]["by_kind"]["lora_A"] == 196_608


def test_best_epoch_ignores_missing_and_non_finite_losses():
    results = RunResults.start("r", CONFIG)
    results.add_epoch(EpochRecord(1, 1, validation_loss=None))
    assert results.best_epoch is None
    results.add_epoch(EpochRecord(2, 2, validation_loss=float("nan")))
    results.add_epoch(EpochRecord(3, 3, validation_loss=1.5))
    results.add_epoch(EpochRecord(4, 4, validation_loss=1.5))
    assert results.best_epoch == 3


def test_json_is_strict_non_finite_becomes_null(tmp_path: Path):
    results = RunResults.start("r", CONFIG)
    results.add_epoch(EpochRecord(1, 1, train_loss=float("inf"), validation_loss=float("nan")))
    write_results(tmp_path, results)
    text = results_path(tmp_path).read_text()

    def refuse(name: str) -> None:
        raise AssertionError(f"non-standard JSON token {name}")

    data = json.loads(text, parse_constant=refuse)
    assert data["epochs"][0]["train_loss"] is None and data["epochs"][0]["validation_loss"] is None


def test_failed_run_records_reason(tmp_path: Path):
    results = RunResults.start("r", CONFIG)
    try:
        raise RuntimeError("CUDA out of memory")
    except RuntimeError as exc:
        results.mark_failed(exc)
    write_results(tmp_path, results)
    back = read_results(tmp_path)
    assert back.status == "failed" and back.error == "RuntimeError: CUDA out of memory"


def test_clear_errors_for_missing_corrupt_and_newer_files(tmp_path: Path):
    with pytest.raises(ResultsError, match="no results file"):
        read_results(tmp_path / "nowhere")
    results_path(tmp_path).write_text('{"schema_version": 1, "run_name": ')
    with pytest.raises(ResultsError, match="corrupt"):
        read_results(tmp_path)
    data = _full_results().to_dict()
    data["schema_version"] = SCHEMA_VERSION + 1
    results_path(tmp_path).write_text(json.dumps(data))
    with pytest.raises(ResultsError, match="newer than this lora-ft reads"):
        read_results(tmp_path)
    data["schema_version"] = SCHEMA_VERSION
    data["status"] = "done"
    results_path(tmp_path).write_text(json.dumps(data))
    with pytest.raises(ResultsError, match="status 'done'"):
        read_results(tmp_path)
    data["status"] = "evaluated"
    data["evaluations"][0]["bleu"] = 1.0
    results_path(tmp_path).write_text(json.dumps(data))
    with pytest.raises(ResultsError, match=r"evaluations\[0\]: unknown field\(s\) bleu"):
        read_results(tmp_path)
    del data["evaluations"][0]["bleu"]
    del data["config"]
    results_path(tmp_path).write_text(json.dumps(data))
    with pytest.raises(ResultsError, match="missing required field.*config"):
        read_results(tmp_path)
    results_path(tmp_path).write_text("[]")
    with pytest.raises(ResultsError, match="JSON object"):
        read_results(tmp_path)


def test_atomic_writers_refuse_overwrite_and_leave_no_temp_files(tmp_path: Path):
    target = tmp_path / "sub" / "predictions.json"
    write_json_atomic(target, {"a": [1, 2]})
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_json_atomic(target, {"a": 3})
    assert json.loads(target.read_text()) == {"a": [1, 2]}
    write_json_atomic(target, {"a": 3}, overwrite=True)
    assert json.loads(target.read_text()) == {"a": 3}
    write_text_atomic(tmp_path / "sub" / "p.txt", "line\n")
    assert sorted(os.listdir(tmp_path / "sub")) == ["p.txt", "predictions.json"]


def test_failed_serialisation_keeps_the_previous_file(tmp_path: Path):
    results = _full_results()
    write_results(tmp_path, results)
    before = results_path(tmp_path).read_text()
    results.extra["bad"] = object()
    with pytest.raises(TypeError, match="cannot write a object"):
        write_results(tmp_path, results)
    assert results_path(tmp_path).read_text() == before
    assert os.listdir(tmp_path) == ["results.json"]


def test_collect_environment():
    env = collect_environment()
    assert set(env) >= {"versions", "git_commit", "python", "platform", "device"}
    assert env["versions"]["torch"] == torch.__version__
    assert set(env["versions"]) == {"torch", "transformers", "peft", "accelerate", "datasets", "sacrebleu", "lora-ft"}
    assert env["python"] == platform.python_version()
    assert env["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", env["git_commit"])
    assert env["device"] == ("cpu" if not torch.cuda.is_available() else env["device"])
    assert collect_environment(device="cuda:3")["device"] == "cuda:3"


def test_a_new_run_in_the_same_directory_drops_the_old_runs_evaluations(tmp_path):
    old = RunResults.start("run", {}, environment={})
    old.created_at = "2026-01-01T00:00:00+00:00"
    write_results(tmp_path, old)
    record_evaluation(tmp_path, Evaluation("test", 1, {"BLEU": 1.0}), run=old)
    new = RunResults.start("run", {})  # output.overwrite=true: another run
    write_results(tmp_path, new)
    assert read_results(tmp_path).evaluations == []
    with pytest.raises(ResultsError, match="no longer describes the run that was evaluated"):
        record_evaluation(tmp_path, Evaluation("test", 2, {"BLEU": 2.0}, "predictions-test-epoch2.txt"), run=old)
    assert read_results(tmp_path).evaluations == []


def test_an_evaluation_sets_evaluated_only_once_training_has_finished(tmp_path):
    run = RunResults.start("run", {})
    write_results(tmp_path, run)
    assert record_evaluation(tmp_path, Evaluation("test", 1, {}), run=run).status == "training"
    run.status = "trained"
    write_results(tmp_path, run)
    assert len(run.evaluations) == 1  # the trainer's record now holds the evaluation recorded meanwhile
    assert record_evaluation(tmp_path, Evaluation("test", 2, {}), run=run).status == "evaluated"
    assert [e.epoch for e in read_results(tmp_path).evaluations] == [1, 2]


def test_an_evaluation_that_rewrites_a_predictions_file_replaces_the_one_that_wrote_it():
    """Evaluating again (new code, other decoding) overwrites predictions-test-final.txt: the old record would point at
    predictions that are gone, and a table taking the best evaluation would pick the better of two decodings."""
    results = _full_results()
    results.add_evaluation(Evaluation("test", None, {"BLEU": 50.0}, "predictions-test-final.txt", 630))
    results.add_evaluation(Evaluation("validation", None, {"BLEU": 60.0}, "predictions-validation-final.txt", 630))
    results.add_evaluation(Evaluation("test", None, {"BLEU": 40.0}, "predictions-test-final.txt", 630))
    assert [(e.predictions_file, e.scores["BLEU"]) for e in results.evaluations] == [
        ("predictions/test-epoch2.txt", 70.1),
        ("predictions-validation-final.txt", 60.0),
        ("predictions-test-final.txt", 40.0),
    ]
