"""Training end to end on a tiny random GPT-2 with real E2E rows: run directory, refusal to overwrite, resume, DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lora_ft.checkpoint import read_trained
from lora_ft.config import config_from_dict
from lora_ft.results import read_results
from lora_ft.run_dir import RunDirectoryError
from lora_ft.train import Trainer, train
from tiny_runs import tiny_run_config as tiny_config

REPO = Path(__file__).resolve().parents[1]


def trained_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    return read_trained(run_dir)[0]


def test_train_writes_a_complete_run_directory(tmp_path):
    run_dir = train(config_from_dict(tiny_config(tmp_path / "run")))
    results = read_results(run_dir)
    assert results.status == "trained"
    assert [e.epoch for e in results.epochs] == [1, 2]
    assert results.epochs[-1].step == 8  # 32 examples / batch 8 = 4 steps per epoch
    assert all(e.validation_loss is not None and e.train_loss is not None for e in results.epochs)
    assert results.best_epoch in (1, 2)
    # 2 blocks x (q, v) x (A: r x d + B: d x r) with d = 32, r = 2
    assert results.parameters.trainable == 2 * 2 * (2 * 32 * 2)
    assert results.environment["versions"]["torch"] == torch.__version__
    tensors = trained_tensors(run_dir)
    assert set(tensors) == {f"transformer.h.{i}.attn.c_attn.{p}" for i in range(2) for p in ("lora_A", "lora_B")}
    assert (run_dir / "config.yaml").read_text().startswith("# Resolved config")
    assert (run_dir / "checkpoints" / "epoch-2" / "trained.safetensors").is_file()
    assert "epoch 2" in (run_dir / "train.log").read_text()


def test_an_existing_run_is_never_overwritten_silently(tmp_path):
    cfg = config_from_dict(tiny_config(tmp_path / "run", epochs=1))
    train(cfg)
    before = (tmp_path / "run" / "trained.safetensors").read_bytes()
    with pytest.raises(RunDirectoryError, match="already holds a run"):
        Trainer(cfg)
    assert (tmp_path / "run" / "trained.safetensors").read_bytes() == before


class _Interrupt(Exception):
    pass


def _train_interrupted_at(cfg, step: int, monkeypatch):
    original = Trainer._training_step
    calls = {"n": 0}

    def failing(self, batch):
        calls["n"] += 1
        if calls["n"] > step:
            raise _Interrupt()
        return original(self, batch)

    monkeypatch.setattr(Trainer, "_training_step", failing)
    with pytest.raises(_Interrupt):
        train(cfg)
    monkeypatch.setattr(Trainer, "_training_step", original)


@pytest.mark.parametrize("checkpoint_every_steps, interrupt_at", [(None, 6), (3, 5)], ids=["epoch-checkpoint", "mid-epoch"])
def test_resumed_run_ends_with_the_same_weights(tmp_path, monkeypatch, checkpoint_every_steps, interrupt_at):
    reference = train(config_from_dict(tiny_config(tmp_path / "whole", checkpoint_every_steps=checkpoint_every_steps)))
    cfg = config_from_dict(tiny_config(tmp_path / "resumed", checkpoint_every_steps=checkpoint_every_steps))
    _train_interrupted_at(cfg, interrupt_at, monkeypatch)
    assert read_results(tmp_path / "resumed").status == "failed"
    train(cfg, resume=True)
    expected, got = trained_tensors(reference), trained_tensors(tmp_path / "resumed")
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)
    whole, resumed = read_results(reference), read_results(tmp_path / "resumed")
    assert [e.train_loss for e in resumed.epochs] == pytest.approx([e.train_loss for e in whole.epochs], abs=1e-6)


@pytest.mark.slow
def test_two_processes_follow_the_one_process_loss_curve(tmp_path):
    """Two CPU processes under `accelerate launch` give the same losses and weights as one with the same global batch
    (dropout off: its random draws are per process).

    Note: accelerate 1.15's `--cpu --num_processes 2` silently starts ONE process (its simple launcher); on a machine
    without GPUs, `--multi_gpu --num_processes 2` runs torchrun, and Accelerate then uses gloo on the CPU (MULTI_CPU)."""
    runs = {}
    for procs in (1, 2):
        config = tiny_config(tmp_path / f"p{procs}")
        config["method"]["dropout"] = 0.0
        path = tmp_path / f"p{procs}.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu" if procs > 1 else "--cpu",
               "--num_processes", str(procs),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "lora_ft", "train", "--config", str(path)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[procs] = read_results(tmp_path / f"p{procs}")
    one, two = runs[1], runs[2]
    assert (one.extra["num_processes"], two.extra["num_processes"]) == (1, 2)
    assert [e.step for e in one.epochs] == [e.step for e in two.epochs]
    for a, b in zip(one.epochs, two.epochs):
        assert b.train_loss == pytest.approx(a.train_loss, rel=1e-5)
        assert b.validation_loss == pytest.approx(a.validation_loss, rel=1e-5)
    w1, w2 = trained_tensors(tmp_path / "p1"), trained_tensors(tmp_path / "p2")
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-4, atol=1e-6, msg=name)


def test_each_run_in_one_process_gets_its_own_log(tmp_path):
    """A sweep trains runs one after another in one process: each run's train.log holds that run's lines only."""
    first = train(config_from_dict(tiny_config(tmp_path / "first", epochs=1)))
    second = train(config_from_dict(tiny_config(tmp_path / "second", epochs=1)))
    first_log, second_log = (first / "train.log").read_text(), (second / "train.log").read_text()
    assert str(first / "trained.safetensors") in first_log and str(second) not in first_log
    assert str(second / "trained.safetensors") in second_log and str(first) not in second_log


def test_a_split_that_needs_the_unreachable_hub_fails_before_any_model_loads(tmp_path, monkeypatch):
    """No validation_file with source 'auto' means the hub's validation split: offline, say so before loading."""
    from lora_ft.tasks.base import TaskDataError

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the data check")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("lora_ft.hub.hub_reachable", lambda: False)
    monkeypatch.setattr("lora_ft.build.adapted_model", no_model)
    config = tiny_config(tmp_path / "run")
    config["task"]["validation_file"] = None
    with pytest.raises(TaskDataError, match="validation split: cannot load the e2e dataset 'tuetschek/e2e_nlg'"):
        train(config_from_dict(config))
    assert not (tmp_path / "run").exists()
