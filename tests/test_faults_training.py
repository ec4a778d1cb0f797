"""Faults during training (issue 8, section 2): divergence, a kill at any moment, a changed config on --resume, Ctrl-C.

The yardstick is always an uninterrupted run of the same tiny config (`reference`): a run that was killed, interrupted
or resumed must end with its epoch records, best epoch, checkpoints and weights. Kills are simulated with the
LORA_FT_STOP_AT hook (lora_ft/stop_points.py), which ends a subprocess with os._exit(137) at a named point, as kill -9
would, without racing a signal against the loop.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from lora_ft import cli
from lora_ft.checkpoint import MANIFEST_FILE, TENSORS_SHA256_KEY, TRAINED_FILE, read_trained, tensors_digest, write_manifest
from lora_ft.config import config_from_dict
from lora_ft.divergence import NonFiniteWeightsError, TrainingDivergedError
from lora_ft.resume import config_changes
from lora_ft.results import read_results
from lora_ft.schema import ConfigError
from lora_ft.stop_points import ENV_VAR, KILLED_EXIT_CODE, stop_point
from lora_ft.train import Trainer, train
from tiny_runs import tiny_run_config

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT_NAME = re.compile(r"(step|epoch)-\d+")


def run_config(run_dir: Path, **training) -> dict:
    """The tiny run of tests/tiny_runs.py (2 epochs of 4 steps) with a step checkpoint every 2 steps, so that
    step-4 and step-8 are the last steps of their epochs."""
    return tiny_run_config(run_dir, checkpoint_every_steps=2, **training)


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def checkpoint_names(run_dir: Path) -> list[str]:
    root = run_dir / "checkpoints"
    return sorted(d.name for d in root.iterdir() if CHECKPOINT_NAME.fullmatch(d.name)) if root.is_dir() else []


def epoch_table(run_dir: Path) -> list[tuple]:
    """(epoch, step, train loss, validation loss, learning rate) of each epoch record."""
    return [
        (e.epoch, e.step, e.train_loss, e.validation_loss, e.learning_rate) for e in read_results(run_dir).epochs
    ]


def assert_same_run(got: Path, expected: Path) -> None:
    """Records, best epoch, checkpoints and final weights of `got` are those of the uninterrupted `expected`."""
    got_results, expected_results = read_results(got), read_results(expected)
    assert (got_results.status, got_results.error) == ("trained", None)
    got_table, expected_table = epoch_table(got), epoch_table(expected)
    assert [row[:2] for row in got_table] == [row[:2] for row in expected_table]
    for got_row, expected_row in zip(got_table, expected_table):
        assert got_row[2:] == pytest.approx(expected_row[2:], rel=1e-6), f"epoch {got_row[0]}"
    assert got_results.best_epoch == expected_results.best_epoch
    assert checkpoint_names(got) == checkpoint_names(expected)
    expected_weights, got_weights = read_trained(expected)[0], read_trained(got)[0]
    for name, tensor in expected_weights.items():
        torch.testing.assert_close(got_weights[name], tensor, rtol=0, atol=0, msg=name)


def all_saved_weights_finite(run_dir: Path) -> bool:
    directories = [run_dir] if (run_dir / TRAINED_FILE).is_file() else []
    directories += [run_dir / "checkpoints" / name for name in checkpoint_names(run_dir)]
    return all(bool(torch.isfinite(t).all()) for d in directories for t in read_trained(d)[0].values())


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run every faulty run is compared with."""
    return train(config_from_dict(run_config(tmp_path_factory.mktemp("reference") / "run")))


def test_the_reference_run_has_the_expected_shape(reference):
    assert checkpoint_names(reference) == ["epoch-1", "epoch-2", "step-2", "step-4", "step-6", "step-8"]
    assert [row[:2] for row in epoch_table(reference)] == [(1, 4), (2, 8)]
    assert all(row[2] > 0 for row in epoch_table(reference))


# ------------------------------------------------------------------------------------------------ kill -9, then resume


def train_until_killed(config: dict, config_path: Path, point: str) -> None:
    env = {**os.environ, ENV_VAR: point, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "lora_ft", "train", "--config", str(write_config(config_path, config))],
        env=env, capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert proc.returncode == KILLED_EXIT_CODE, proc.stderr[-3000:]


# point -> (checkpoints on disk when killed, epochs results.json records when killed)
KILL_POINTS = {
    "after-step:7": (["epoch-1", "step-2", "step-4", "step-6"], [1]),  # mid-epoch, 1 step past the last checkpoint
    "after-step-checkpoint:4": (["step-2", "step-4"], []),  # the last step of epoch 1, before its end
    "after-epoch-checkpoint:1": (["epoch-1", "step-2", "step-4"], []),  # before results.json records epoch 1
    "after-step-checkpoint:8": (["epoch-1", "step-2", "step-4", "step-6", "step-8"], [1]),  # the run's last step
    "after-epoch-checkpoint:2": (["epoch-1", "epoch-2", "step-2", "step-4", "step-6", "step-8"], [1]),
    "after-epoch-results:2": (["epoch-1", "epoch-2", "step-2", "step-4", "step-6", "step-8"], [1, 2]),
    "after-final-weights": (["epoch-1", "epoch-2", "step-2", "step-4", "step-6", "step-8"], [1, 2]),
}


@pytest.mark.parametrize("point", [
    # The acceptance case runs by default; the other points are slow (a subprocess each) but still run in CI.
    pytest.param(point, marks=[] if point == "after-step-checkpoint:8" else [pytest.mark.slow]) for point in KILL_POINTS
])
def test_a_run_killed_at_any_point_resumes_to_the_uninterrupted_run(tmp_path, reference, point):
    run_dir = tmp_path / "run"
    config = run_config(run_dir)
    train_until_killed(config, tmp_path / "run.yaml", point)
    checkpoints, recorded = KILL_POINTS[point]
    assert checkpoint_names(run_dir) == checkpoints  # the hook stopped where it says
    assert [e.epoch for e in read_results(run_dir).epochs] == recorded
    train(config_from_dict(config), resume=True)
    assert_same_run(run_dir, reference)


# ------------------------------------------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_is_one_line_with_the_resume_command_and_the_resume_clears_it(tmp_path, reference, monkeypatch, capsys):
    config_path = write_config(tmp_path / "run.yaml", run_config(tmp_path / "run"))
    monkeypatch.setenv(ENV_VAR, "interrupt:after-step:3")  # KeyboardInterrupt right after step 3, as Ctrl-C would
    assert cli.main(["train", "--config", str(config_path)]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("lora-ft: error:") == 1
    resume_command = f"lora-ft train --config {config_path} --resume"
    assert f"interrupted at step 3 of 8 (last checkpoint: step 2); resume with: {resume_command}" in err
    results = read_results(tmp_path / "run")
    assert results.status == "interrupted" and results.error.startswith("TrainingInterrupted: interrupted at step 3")
    assert results.extra["interrupted"] == {"signal": "SIGINT", "step": 3}

    monkeypatch.delenv(ENV_VAR)
    assert cli.main(resume_command.split()[1:]) == 0
    assert_same_run(tmp_path / "run", reference)  # also: status trained, error cleared


def test_ctrl_c_before_the_first_checkpoint_says_to_start_again(tmp_path, monkeypatch, capsys):
    config_path = write_config(tmp_path / "run.yaml", tiny_run_config(tmp_path / "run", max_steps=2))
    monkeypatch.setenv(ENV_VAR, "interrupt:after-step:1")
    assert cli.main(["train", "--config", str(config_path)]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"before the first checkpoint (nothing to resume); start again with: lora-ft train --config {config_path} " \
           "output.overwrite=true" in err


def test_ctrl_c_while_the_model_loads_is_one_line_too(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("lora_ft.build.adapted_model", interrupted)
    config_path = write_config(tmp_path / "run.yaml", tiny_run_config(tmp_path / "run"))
    assert cli.main(["train", "--config", str(config_path)]) == 130
    assert f"interrupted before training started; run again with: lora-ft train --config {config_path}" in \
        capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------- divergence


def test_learning_rates_that_are_not_positive_finite_numbers_are_config_errors():
    for bad in (".inf", ".nan", "0", "-1e-4"):
        config = tiny_run_config(Path("unused"))
        config["training"]["learning_rate"] = yaml.safe_load(bad)
        with pytest.raises(ConfigError, match="training.learning_rate must be a positive finite number"):
            config_from_dict(config)
    assert cli.main(["config", "validate", str(REPO / "configs" / "demo_e2e_cpu.yaml"),
                     "training.learning_rate=.inf"]) == 2


def test_lr_1e6_stops_with_one_line_about_the_loss_and_saves_nothing_non_finite(tmp_path, capsys):
    run_dir = tmp_path / "run"
    config_path = write_config(tmp_path / "run.yaml", tiny_run_config(run_dir, learning_rate=1e6, checkpoint_every_steps=1))
    assert cli.main(["train", "--config", str(config_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    message = re.search(r"lora-ft: error: (.*)", err).group(1)
    assert re.search(r"training diverged: the (validation )?loss .*not finite", message), message
    assert "training.learning_rate" in message
    results = read_results(run_dir)
    assert results.status == "failed" and "training diverged" in results.error
    assert not (run_dir / TRAINED_FILE).exists()
    assert checkpoint_names(run_dir)  # the steps before the divergence were checkpointed ...
    assert all_saved_weights_finite(run_dir)  # ... and nothing non-finite was


def test_a_nan_loss_stops_the_run_naming_its_step_and_keeps_the_last_good_checkpoint(tmp_path, reference, monkeypatch):
    """log_every_steps 10: the NaN of step 3 is only seen at the step-4 checkpoint, which must then not be written.
    The run replaces a finished one (output.overwrite): that run's final weights must not pass for this one's."""
    from lora_ft import train as train_module

    original, calls = train_module.completion_loss, {"n": 0}

    def nan_at_step_3(*args):
        calls["n"] += 1
        loss_sum, tokens = original(*args)
        return (loss_sum * float("nan") if calls["n"] == 3 else loss_sum), tokens

    monkeypatch.setattr(train_module, "completion_loss", nan_at_step_3)
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    config = run_config(run_dir)
    config["output"]["overwrite"] = True
    with pytest.raises(TrainingDivergedError, match=r"the loss was not finite \(NaN or inf\) at step 3; stopped at step 4 "
                                                    r".*the last checkpoint, step 2, is finite and kept"):
        train(config_from_dict(config))
    assert checkpoint_names(run_dir) == ["step-2"]
    for name, tensor in read_trained(reference / "checkpoints" / "step-2")[0].items():
        torch.testing.assert_close(read_trained(run_dir / "checkpoints" / "step-2")[0][name], tensor, rtol=0, atol=0)
    results = read_results(run_dir)
    assert results.status == "failed" and "at step 3" in results.error
    assert not (run_dir / TRAINED_FILE).exists()


def test_a_non_finite_gradient_norm_stops_the_run(tmp_path, monkeypatch):
    from lora_ft import train as train_module

    original, calls = train_module.gradient_norm, {"n": 0}

    def inf_at_step_2(parameters):
        calls["n"] += 1
        norm = original(parameters)
        return norm * float("inf") if calls["n"] == 2 else norm

    monkeypatch.setattr(train_module, "gradient_norm", inf_at_step_2)
    with pytest.raises(TrainingDivergedError, match=r"gradient norm was not finite .* at step 2; stopped at step 2 "
                                                    r".*no checkpoint had been written"):
        train(config_from_dict(run_config(tmp_path / "run")))
    assert checkpoint_names(tmp_path / "run") == []


def test_weights_that_become_non_finite_with_finite_losses_are_never_saved(tmp_path, monkeypatch):
    original, calls = Trainer._training_step, {"n": 0}

    def poison_after_step_3(self, batch):
        result = original(self, batch)
        calls["n"] += 1
        if calls["n"] == 3:
            with torch.no_grad():
                next(p for p in self.model.parameters() if p.requires_grad).fill_(float("inf"))
        return result

    monkeypatch.setattr(Trainer, "_training_step", poison_after_step_3)
    with pytest.raises(TrainingDivergedError, match="trained weights were not finite .* after step 3"):
        train(config_from_dict(tiny_run_config(tmp_path / "run", checkpoint_every_steps=3)))
    assert checkpoint_names(tmp_path / "run") == []


def poison(directory: Path) -> None:
    """Overwrite one trained tensor of `directory` with NaNs, as a diverged run trained before these checks left it:
    an intact file (its checksum, and the checkpoint's manifest, describe the NaNs), so only the finiteness check can
    refuse it."""
    tensors, metadata = read_trained(directory)
    name = sorted(tensors)[0]
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    metadata[TENSORS_SHA256_KEY] = tensors_digest(tensors)
    save_file(tensors, str(directory / TRAINED_FILE), metadata=metadata)
    manifest_path = directory / MANIFEST_FILE
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        write_manifest(directory, manifest["progress"], manifest["num_processes"])


@pytest.mark.parametrize("which", ["final", "epoch-1"])
def test_eval_and_export_refuse_non_finite_weights_before_loading_a_model(tmp_path, reference, monkeypatch, which):
    from lora_ft.evaluate import evaluate_run
    from lora_ft.export import export_run

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    poison(run_dir if which == "final" else run_dir / "checkpoints" / "epoch-1")
    monkeypatch.setattr("lora_ft.evaluate.load_tokenizer", no_model)
    monkeypatch.setattr("lora_ft.build.adapted_model", no_model)
    with pytest.raises(NonFiniteWeightsError, match="non-finite values .* the run diverged"):
        evaluate_run(run_dir, epochs="last" if which == "final" else "1")
    if which == "final":
        with pytest.raises(NonFiniteWeightsError):
            export_run(run_dir, tmp_path / "exported", fmt="merged")
        assert not (tmp_path / "exported").exists()


# ------------------------------------------------------------------------------------------- --resume with a changed config


def test_resume_refuses_a_changed_model_or_recipe_in_one_line_before_loading_a_model(tmp_path, reference, monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the config check")

    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    before = {name: (run_dir / name).read_bytes() for name in ("config.yaml", "results.json")}
    config_path = write_config(tmp_path / "run.yaml", run_config(run_dir))
    monkeypatch.setattr("lora_ft.build.adapted_model", no_model)
    code = cli.main(["train", "--config", str(config_path), "--resume", "method.alpha=64", "method.rank=4",
                     "training.learning_rate=1e-3"])
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    for change in ("method.alpha 4.0 -> 64.0", "method.rank 2 -> 4", "training.learning_rate 0.005 -> 0.001"):
        assert change in err
    assert "lora-ft train --config" in err and "config.yaml --resume" in err
    assert before == {name: (run_dir / name).read_bytes() for name in before}


def test_resume_accepts_harmless_changes_and_records_them(tmp_path, reference):
    run_dir = tmp_path / "moved"  # output.dir differs too: a run directory may be moved
    shutil.copytree(reference, run_dir)
    config = run_config(run_dir, log_every_steps=3, eval_batch_size=4)
    train(config_from_dict(config), resume=True)
    results = read_results(run_dir)
    assert results.status == "trained"
    [record] = results.extra["resume_changes"]
    assert record["step"] == 8
    assert record["changes"] == {
        "output.dir": [str(reference), str(run_dir)],
        "training.eval_batch_size": [16, 4],
        "training.log_every_steps": [10, 3],
    }
    assert results.config["training"]["log_every_steps"] == 3
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["training"]["log_every_steps"] == 3
    assert epoch_table(run_dir) == epoch_table(reference)


def test_config_changes_lists_every_differing_key():
    old = {"method": {"name": "lora", "rank": 2, "targets": ["q", "v"]}, "training": {"seed": 1}, "sweep": {}}
    new = {"method": {"name": "lora", "rank": 4, "targets": ["q"]}, "training": {"seed": 1, "extra": True}}
    assert config_changes(old, new) == {
        "method.rank": (2, 4), "method.targets": (["q", "v"], ["q"]), "training.extra": (None, True),
        "sweep": ({}, None),
    }


def test_an_unknown_stop_point_is_an_error_not_a_silent_no_op(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "after-stpe:3")
    with pytest.raises(ValueError, match="unknown point 'after-stpe'"):
        stop_point("after-step", 3)
    monkeypatch.setenv(ENV_VAR, "after-step:3")
    stop_point("after-step", 2)  # another step: carries on


def test_the_loop_reads_no_device_value_between_logging_steps(tmp_path, monkeypatch):
    """The divergence check is cheap: in a step that neither logs nor checkpoints, lora-ft's code converts no tensor to
    a Python value (on a GPU each such conversion waits for the device). Counted by wrapping Tensor's conversions and
    keeping those called from lora_ft's own files (transformers and torch.optim make some of their own on the CPU)."""
    from lora_ft import train as train_module

    package = str(Path(train_module.__file__).parent)
    conversions = {"n": 0}
    for method in ("item", "tolist", "__float__", "__int__", "__bool__"):
        original = getattr(torch.Tensor, method)

        def counted(self, *args, _original=original, **kwargs):
            conversions["n"] += sys._getframe(1).f_code.co_filename.startswith(package)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, counted)
    at_step = {}
    monkeypatch.setattr(train_module, "stop_point", lambda point, n=None: at_step.setdefault(n, conversions["n"])
                        if point == "after-step" else None)
    train(config_from_dict(tiny_run_config(tmp_path / "run", epochs=1, log_every_steps=4)))  # logs at steps 1 and 4
    assert sorted(at_step) == [1, 2, 3, 4]
    # The counter is read as each step ends, before that step's logging: step 1's logging falls between 1 and 2.
    assert at_step[2] > at_step[1]  # a logging step syncs, and the counter sees it
    assert at_step[4] == at_step[3] == at_step[2], "steps 2 and 3 (no logging, no checkpoint) read a device value"
