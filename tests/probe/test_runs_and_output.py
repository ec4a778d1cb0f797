"""Issue 17 probe cases ("what a careful user still hits"): runs, their output and their run directories.

Items 6-11 as a reviewer observed them on main, one test each (named after the item); each failed before its fix.
Kept so that the next probe starts from them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from lora_ft import cli
from lora_ft.config import config_from_dict
from lora_ft.report.table import build_table
from lora_ft.results import Evaluation, ParameterCounts, RunResults, read_results, write_results
from lora_ft.train import train
from tiny_runs import tiny_run_config

REPO = Path(__file__).resolve().parents[2]
TIMESTAMP = re.compile(r"^\d\d:\d\d:\d\d ")


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


# ----------------------------------------------------------------------------------- 6: one copy of each line, N processes


def test_item6_accelerate_launch_prints_each_line_once(tmp_path):
    """`accelerate launch` with 2 processes: every warning, progress line and the final "trained:" line once.

    `--multi_gpu`, not `--cpu`: accelerate 1.15's `--cpu --num_processes 2` silently starts ONE process (see
    tests/test_train.py); without GPUs `--multi_gpu` runs torchrun and Accelerate uses gloo on the CPU."""
    config_path = write_config(tmp_path / "run.yaml", tiny_run_config(tmp_path / "run", epochs=1))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "lora_ft", "-v", "train", "--config", str(config_path),
           "method.name=bitfit"]  # a warning from every process: the LoRA keys of the file are dropped
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_results(tmp_path / "run").extra["num_processes"] == 2  # really two processes
    # lora-ft's own lines: warnings and errors, progress lines (time-stamped), the result line
    ours = [TIMESTAMP.sub("", line) for line in (proc.stdout + proc.stderr).splitlines()
            if line.startswith(("lora-ft:", "trained:")) or TIMESTAMP.match(line)]
    assert any(line.startswith("lora-ft: warning:") for line in ours), ours  # method.name=bitfit's dropped keys
    assert any(line.startswith("step 1 ") for line in ours), ours
    assert any(line.startswith("trained: ") for line in ours), ours
    printed_twice = [line for line, n in Counter(ours).items() if n > 1]
    assert printed_twice == [], "\n".join(ours)


# ------------------------------------------------------------------------------------ 7: which loss is which


def test_item7_logs_and_results_say_which_loss_includes_label_smoothing(tmp_path, capsys):
    config = tiny_run_config(tmp_path / "run", epochs=1, label_smoothing=0.1)
    config_path = write_config(tmp_path / "run.yaml", config)
    assert cli.main(["-v", "train", "--config", str(config_path)]) == 0
    err = capsys.readouterr().err
    log = (tmp_path / "run" / "train.log").read_text()
    for text in (err, log):
        assert re.search(r"step 1 train loss \(label smoothing 0\.1\) [\d.]+ ", text), text
        assert re.search(r"epoch 1: train loss \(label smoothing 0\.1\) [\d.]+, validation loss \(no label smoothing\) "
                         r"[\d.]+", text), text
    losses = read_results(tmp_path / "run").extra["losses"]
    assert "label smoothing 0.1" in losses["train_loss"]
    assert "no label smoothing" in losses["validation_loss"]


# ------------------------------------------------------------------------------------ 8: eval -v shows its progress


def test_item8_eval_verbose_prints_decoding_progress(tmp_path, capsys):
    config = tiny_run_config(tmp_path / "run", epochs=1)
    config["decoding"]["batch_size"] = 1  # the tiny config's 2 test MRs: two batches
    train(config_from_dict(config))
    capsys.readouterr()
    assert cli.main(["-v", "eval", "--run", str(tmp_path / "run"), "--no-meteor"]) == 0
    err = capsys.readouterr().err
    progress = re.findall(r"beam search: (\d+)/(\d+) items, [\d.]+ items/s", err)
    assert progress == [("1", "2"), ("2", "2")], err


# ------------------------------------------------------------------------------------ 9: seeds, not runs


def fake_run(root: Path, name: str, seed: int, bleu: float) -> Path:
    """A finished, evaluated E2E run directory with one test-set score (no training needed for a table)."""
    config = {
        "model": {"name_or_path": "gpt2-medium"},
        "task": {"name": "e2e"},
        "method": {"name": "lora", "rank": 4, "alpha": 32, "dropout": 0.1, "targets": ["q", "v"]},
        "training": {"epochs": 2, "batch_size": 8, "learning_rate": 2e-4, "seed": seed},
        "output": {"dir": str(root / name)},
    }
    results = RunResults.start(name, config)
    results.status = "evaluated"
    results.parameters = ParameterCounts(393_216, 355_216_384, {"lora": 393_216})
    scores = {"BLEU": bleu, "NIST": 8.8, "METEOR": 46.0, "ROUGE_L": 71.0, "CIDEr": 2.5}
    results.add_evaluation(Evaluation(split="test", epoch=2, scores=scores, num_items=630))
    write_results(root / name, results)
    return root / name


def test_item9_table_counts_distinct_seeds_and_names_runs_that_share_one(tmp_path):
    runs = [fake_run(tmp_path, "a", 110, 70.0), fake_run(tmp_path, "a-copy", 110, 70.0),
            fake_run(tmp_path, "b", 111, 70.4)]
    text = build_table(runs, fmt="markdown")
    row = next(line for line in text.splitlines() if line.startswith("| GPT-2 M (LoRA"))
    assert [c.strip() for c in row.split("|")[1:-1]][2] == "2", row  # seeds 110 and 111, not 3 runs
    note = next((line.replace("\\_", "_") for line in text.splitlines() if "share seed 110" in line), None)
    assert note is not None, text
    assert f"runs {tmp_path / 'a'}, {tmp_path / 'a-copy'} share seed 110" in note and str(tmp_path / "b") not in note


# ------------------------------------------------------------------------------------ 10: SIGTERM


def test_item10_sigterm_does_not_leave_status_training(tmp_path):
    """A real `lora-ft train` sent SIGTERM mid-run: exit 143 (128 + 15), one line, status `interrupted` with its step,
    the lock released; `--resume` then finishes it."""
    run_dir = tmp_path / "run"
    config = tiny_run_config(run_dir, epochs=10, checkpoint_every_steps=2)  # 40 steps
    config_path = write_config(tmp_path / "run.yaml", config)
    proc = subprocess.Popen([sys.executable, "-m", "lora_ft", "train", "--config", str(config_path)],
                            env=subprocess_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "checkpoints" / "step-2").is_dir():  # resumable from here
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no step-2 checkpoint after 300 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err
    said = [line for line in err.splitlines() if line.strip() and not line.startswith("lora-ft: warning: ")]
    assert len(said) == 1 and said[0].startswith("lora-ft: error: "), err  # one line (besides the config's warning)
    assert "SIGTERM" in said[0] and f"lora-ft train --config {config_path} --resume" in said[0]
    results = read_results(run_dir)
    assert results.status == "interrupted", results.status
    step = results.extra["interrupted"]["step"]
    assert 2 <= step < 40 and f"at step {step} of 40" in results.error
    assert not (run_dir / ".lock").exists()

    assert cli.main(["train", "--config", str(config_path), "--resume"]) == 0
    results = read_results(run_dir)
    assert (results.status, results.error, [e.epoch for e in results.epochs]) == ("trained", None, list(range(1, 11)))
    assert "interrupted" not in results.extra


def test_item10_a_first_signal_waits_for_the_step_a_second_stops_at_once():
    """The handler's design (lora_ft/stop_signals.py): while the loop runs the first signal only sets the flag the loop
    checks; a second one stops at once, but a copy within DUPLICATE_WINDOW_S (torchrun forwarding the scheduler's
    signal) is the same request; once stopping, a forwarded copy does not cut the recording short. (Issue 18: the
    copy window, and SIGUSR1 among the signals.)"""
    from lora_ft.stop_signals import Interrupted, StopRequest, stop_signals

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    with stop_signals() as stop:
        with stop.deferring():
            os.kill(os.getpid(), signal.SIGUSR1)  # a real signal, through the installed handler
            assert stop.signum == signal.SIGUSR1
            stop.handle(signal.SIGTERM, None)  # a copy at once (another sender): the same request
        with pytest.raises(Interrupted) as checked:
            stop.check()
        assert checked.value.signum == signal.SIGUSR1
        stop.handle(signal.SIGTERM, None)  # stopping already: ignored
    assert {s: signal.getsignal(s) for s in previous} == previous
    with pytest.raises(Interrupted):  # not deferring (loading the model): at once
        StopRequest().handle(signal.SIGINT, None)
    waiting = StopRequest(duplicate_window_s=0.0)  # a second signal, later than a copy would come
    with waiting.deferring():
        waiting.handle(signal.SIGINT, None)
        with pytest.raises(Interrupted) as second:
            waiting.handle(signal.SIGINT, None)
    assert second.value.signum == signal.SIGINT


# ------------------------------------------------------------------------------------ 11: overwrite keeps a user's files


def test_item11_overwrite_removes_only_what_lora_ft_wrote(tmp_path):
    run_dir = tmp_path / "run"
    train(config_from_dict(tiny_run_config(run_dir, epochs=1)))
    (run_dir / "checkpoints" / "mine.txt").write_text("my notes")
    (run_dir / "checkpoints" / "my-dir").mkdir()
    (run_dir / "checkpoints" / "my-dir" / "trained.safetensors").write_text("mine too")
    (run_dir / "notes.md").write_text("my notes")
    config = tiny_run_config(run_dir, epochs=1, seed=4)
    config["output"]["overwrite"] = True
    train(config_from_dict(config))
    assert read_results(run_dir).seed == 4 and read_results(run_dir).status == "trained"
    assert (run_dir / "checkpoints" / "mine.txt").read_text() == "my notes"
    assert (run_dir / "checkpoints" / "my-dir" / "trained.safetensors").read_text() == "mine too"
    assert (run_dir / "notes.md").read_text() == "my notes"


@pytest.mark.parametrize("overwrite", [True, False], ids=["overwrite", "new-run"])
@pytest.mark.parametrize("name, text", [("results.json", '{"accuracy": 0.9}\n'), ("config.yaml", "my: settings\n")])
def test_item11_a_folder_with_a_foreign_results_or_config_is_refused(tmp_path, capsys, monkeypatch, name, text,
                                                                     overwrite):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("lora_ft.build.adapted_model", no_model)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / name).write_text(text)
    config = tiny_run_config(folder, epochs=1)
    config["output"]["overwrite"] = overwrite
    assert cli.main(["train", "--config", str(write_config(tmp_path / "run.yaml", config))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lora-ft: error: ") and name in err, err
    assert "not written by lora-ft" in err, err
    assert sorted(p.name for p in folder.iterdir()) == [name]
    assert (folder / name).read_text() == text
