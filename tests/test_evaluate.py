"""`lora-ft eval --run`: decoding a trained tiny run, writing its files, and scoring them as the file scorer would."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lora_ft.config import config_from_dict
from lora_ft.evaluate import evaluate_run
from lora_ft.metrics.e2e import read_predictions, read_references
from lora_ft.results import read_results
from lora_ft.scoring import score_files
from lora_ft.train import train
from tiny_runs import tiny_run_config

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
E2E_METRICS = ["BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"]

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs a Java runtime")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    config = tiny_run_config(tmp_path_factory.mktemp("eval") / "run")
    config["task"]["max_eval_examples"] = 3
    return train(config_from_dict(config))


@needs_java
def test_every_epoch_is_decoded_written_and_scored(trained_run: Path) -> None:
    evaluations = evaluate_run(trained_run, epochs="all")
    assert [e.epoch for e in evaluations] == [1, 2]
    references = read_references(trained_run / "references-test.txt")
    assert len(references) == 3  # one group per distinct MR: max_eval_examples counts MRs, not rows
    # The first MR's group holds every test row of that MR, in file order.
    test_rows = (SHARED / "e2e" / "test.txt").read_text(encoding="utf-8").splitlines()
    first_mr = test_rows[0].split("||")[0]
    assert references[0] == [row.split("||")[1].strip() for row in test_rows if row.split("||")[0] == first_mr]
    for evaluation in evaluations:
        assert evaluation.num_items == 3
        assert list(evaluation.scores) == E2E_METRICS
        assert evaluation.decoding["num_beams"] == 2 and evaluation.decoding["max_new_tokens"] == 6
        predictions_file = trained_run / evaluation.predictions_file
        assert len(read_predictions(predictions_file)) == 3  # one line per MR, empty outputs included
        # Scoring the written files the way `lora-ft eval --task e2e` does gives the stored scores.
        assert score_files("e2e", predictions_file, trained_run / "references-test.txt") == pytest.approx(evaluation.scores)
    stored = read_results(trained_run)
    assert stored.status == "evaluated"
    assert {(e.split, e.epoch) for e in stored.evaluations} >= {("test", 1), ("test", 2)}


@needs_java
def test_base_model_is_recorded_as_epoch_zero(trained_run: Path) -> None:
    (evaluation,) = evaluate_run(trained_run, base=True)
    assert evaluation.epoch == 0
    assert evaluation.predictions_file == "predictions-test-base.txt"
    assert (trained_run / "predictions-test-base.txt").is_file()
    assert any(e.epoch == 0 for e in read_results(trained_run).evaluations)


@pytest.mark.slow
@needs_java
def test_cli_eval_prints_the_official_example_scores() -> None:
    """The acceptance command, through the console entry point: the official scorer's published values."""
    example = SHARED / "e2e-metrics-example"
    out = subprocess.run(
        [sys.executable, "-m", "lora_ft", "eval", "--task", "e2e", "--json",
         "--predictions", str(example / "baseline-output.txt"), "--references", str(example / "devel-conc.txt")],
        capture_output=True, text=True, check=True,
    )
    scores = json.loads(out.stdout)
    # measure_scores.py on this example (metrics.md): BLEU 0.7203, NIST 7.7889, METEOR 0.4801, ROUGE_L 0.7910, CIDEr 2.3039
    assert scores["BLEU"] == pytest.approx(72.03, abs=0.01)
    assert scores["NIST"] == pytest.approx(7.7889, abs=0.001)
    assert scores["METEOR"] == pytest.approx(48.01, abs=0.01)
    assert scores["ROUGE_L"] == pytest.approx(79.10, abs=0.01)
    assert scores["CIDEr"] == pytest.approx(2.3039, abs=0.001)


def test_eval_run_passes_no_meteor_on(trained_run: Path, capsys) -> None:
    """`lora-ft eval --run DIR --no-meteor`: METEOR (which needs Java) is neither computed nor recorded."""
    from lora_ft.cli import main

    assert main(["eval", "--run", str(trained_run), "--epochs", "1", "--no-meteor", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == ["BLEU", "NIST", "ROUGE_L", "CIDEr"]
    recorded = [e for e in read_results(trained_run).evaluations if e.epoch == 1 and "METEOR" not in e.scores]
    assert recorded and recorded[-1].scores == pytest.approx(printed)


def test_the_final_weights_of_a_run_still_training_are_not_evaluated(tmp_path: Path) -> None:
    """While `train` (e.g. with output.overwrite=true) runs, trained.safetensors is absent or an older run's."""
    import yaml

    from lora_ft.results import ResultsError, RunResults, write_results

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(tiny_run_config(run_dir)))
    write_results(run_dir, RunResults.start("run", {}))
    with pytest.raises(ResultsError, match="has status 'training': its final weights are written when training finishes"):
        evaluate_run(run_dir)
