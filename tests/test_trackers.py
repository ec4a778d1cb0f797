"""training.report_to: trackers through Accelerate, a missing package as a one-line error before any model loads."""

from __future__ import annotations

import re
import typing

import pytest

from lora_ft import trackers
from lora_ft.config import TrackerName, config_from_dict
from lora_ft.results import read_results
from lora_ft.schema import ConfigError
from lora_ft.train import Trainer, train
from tiny_runs import tiny_run_config


def _only_installed(monkeypatch, *names: str) -> None:
    monkeypatch.setattr(trackers, "_installed", lambda name: name in names)


def test_the_config_names_the_trackers_this_module_knows():
    assert set(typing.get_args(TrackerName)) == {*trackers.TRACKER_MODULES, "all", "none"}


@pytest.mark.parametrize(
    "report_to, expected",
    [
        ("none", []),
        ("tensorboard", ["tensorboard"]),
        (["tensorboard", "mlflow"], ["tensorboard", "mlflow"]),
        ("all", ["tensorboard", "mlflow"]),  # every installed one, as HF Trainer's "all"
    ],
)
def test_report_to_as_hf_trainer_reads_it(tmp_path, monkeypatch, report_to, expected):
    _only_installed(monkeypatch, "tensorboard", "mlflow")
    cfg = config_from_dict(tiny_run_config(tmp_path / "run", report_to=report_to))
    assert trackers.resolve_trackers(cfg.training.report_to) == expected


def test_default_is_no_tracker_and_none_stands_alone(tmp_path):
    assert config_from_dict(tiny_run_config(tmp_path / "run")).training.report_to == ["none"]
    with pytest.raises(ConfigError, match="'none' cannot be combined"):
        config_from_dict(tiny_run_config(tmp_path / "run", report_to=["none", "wandb"]))
    with pytest.raises(ConfigError, match="report_to"):
        config_from_dict(tiny_run_config(tmp_path / "run", report_to=["tensorbord"]))


def test_a_missing_tracker_package_is_one_line_naming_the_extra_before_any_model_loads(tmp_path, monkeypatch):
    _only_installed(monkeypatch, "tensorboard")

    def no_model_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the tracker check")

    monkeypatch.setattr("lora_ft.build.adapted_model", no_model_load)
    cfg = config_from_dict(tiny_run_config(tmp_path / "run", report_to=["tensorboard", "wandb"]))
    with pytest.raises(ConfigError) as info:
        Trainer(cfg)
    message = str(info.value)
    assert "\n" not in message
    assert "'wandb'" in message and 'pip install "lora-ft[wandb]"' in message


def test_flat_config_keeps_what_tensorboard_hparams_accept():
    flat = trackers.flat_config({"training": {"seed": 3, "adam_betas": [0.9, 0.999], "max_steps": None}, "sweep": {}})
    assert flat == {"training.seed": 3, "training.adam_betas": "[0.9, 0.999]", "training.max_steps": "null", "sweep": "{}"}


def test_tensorboard_logs_the_losses_the_run_records(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = train(config_from_dict(tiny_run_config(tmp_path / "run", epochs=1, log_every_steps=2, report_to="tensorboard")))
    events = EventAccumulator(str(run_dir / trackers.PROJECT))
    events.Reload()
    train_loss = events.Scalars("train/loss")
    assert [e.step for e in train_loss] == [1, 2, 4]  # step 1, then every 2 steps (4 steps in the epoch)
    # Against the run's own log, written independently of the tracker (4 decimals there).
    logged = {int(s): float(v) for s, v in re.findall(r"step (\d+) train loss (?:\(label smoothing [0-9.]+\) )?([0-9.]+)",
                                                        (run_dir / "train.log").read_text())}
    assert {e.step: round(e.value, 4) for e in train_loss} == pytest.approx(logged, abs=1e-4)
    [valid] = events.Scalars("valid/loss")
    record = read_results(run_dir).epochs[0]
    assert valid.step == record.step == 4
    assert valid.value == pytest.approx(record.validation_loss, rel=1e-6)


class _Tracker:
    def __init__(self, name: str, run_id: str):
        self.name = name
        if name == "wandb":
            self.run = type("Run", (), {"id": run_id})()
        else:
            self.active_run = type("Active", (), {"info": type("Info", (), {"run_id": run_id})()})()


class _Accelerator:
    """Records init_trackers; its trackers have the run ids a W&B and an MLflow run would have."""

    def __init__(self):
        self.calls, self.trackers = [], []

    def init_trackers(self, project, config=None, init_kwargs=None):
        self.calls.append((project, config, init_kwargs))
        ids = {"wandb": "w-1", "mlflow": "m-1"}
        for name in ("wandb", "mlflow"):
            self.trackers.append(_Tracker(name, init_kwargs[name].get("id") or init_kwargs[name].get("run_id") or ids[name]))


def test_a_resumed_run_continues_its_wandb_and_mlflow_runs():
    """The first attempt starts new runs and returns their ids (results.json keeps them); a resume hands them back
    (W&B id + resume="allow", MLflow run_id) and logs no config again (MLflow refuses changed parameters)."""
    first = _Accelerator()
    ids = trackers.start_trackers(first, "run-a", {"training": {"seed": 3}})
    assert ids == {"wandb": "w-1", "mlflow": "m-1"}
    _, config, kwargs = first.calls[0]
    assert config == {"training.seed": 3} and "id" not in kwargs["wandb"] and "run_id" not in kwargs["mlflow"]
    again = _Accelerator()
    assert trackers.start_trackers(again, "run-a", {"training": {"seed": 3}}, resumed=ids) == ids
    _, config, kwargs = again.calls[0]
    assert config is None
    assert kwargs == {"wandb": {"name": "run-a", "id": "w-1", "resume": "allow"},
                      "mlflow": {"run_name": "run-a", "run_id": "m-1"}}


def test_train_records_the_tracker_run_ids_and_hands_them_to_the_resume(tmp_path, monkeypatch):
    calls = []

    def recording(accelerator, run_name, config, resumed=None):
        calls.append(resumed)
        return dict(resumed or {"wandb": "w-7"})

    monkeypatch.setattr("lora_ft.train.start_trackers", recording)
    config = config_from_dict(tiny_run_config(tmp_path / "run", epochs=1, report_to="tensorboard"))
    train(config)
    assert read_results(tmp_path / "run").extra["trackers"] == {"wandb": "w-7"}
    train(config, resume=True)
    assert calls == [None, {"wandb": "w-7"}]
    assert read_results(tmp_path / "run").extra["trackers"] == {"wandb": "w-7"}
