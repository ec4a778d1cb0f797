"""Checkpoints hold no pickle, round-trip exactly, are verified before use, and a damaged one is skipped, named.

Most tests drive lora_ft.checkpoint directly with a tiny LoRA GPT-2, torch's AdamW and transformers' linear schedule
(milliseconds); the end-to-end ones train the tiny run of tests/tiny_runs.py through `train` and the CLI."""

from __future__ import annotations

import ast
import copy
import json
import shutil
import math
import pickle
import re
from pathlib import Path

import pytest
import torch
import yaml
from transformers import get_linear_schedule_with_warmup

from lora_ft.checkpoint import (
    MANIFEST_FILE, TRAINED_FILE, CheckpointError, load_trained, read_trained, resume_latest, save_trained,
    write_checkpoint, write_manifest,
)
from lora_ft.training_state import load_state, rng_state, save_state, set_rng_state

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT_FILES = ("trained.safetensors", "optimizer.safetensors", "optimizer.json", "scheduler.json",
                    "rng-0.safetensors", "rng-0.json", "progress.json", MANIFEST_FILE)
OLD_FILES = ("training_state.pt", "rng-0.pt")  # what lora-ft wrote before: pickles


class OneProcess:
    """The part of an Accelerator that checkpoints use, for a single process."""

    is_main_process, process_index, num_processes = True, 0, 1

    def wait_for_everyone(self):
        pass

    def unwrap_model(self, model):
        return model


class Training:
    """A tiny LoRA model with its optimizer and schedule, trained `steps` steps on a fixed batch."""

    def __init__(self, tiny, steps: int = 0):
        self.model, self.method, _ = tiny.adapt("gpt2", "lora")
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-2)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, 2, 20)
        self.ids = tiny.ids()
        self.step = 0
        self.train(steps)

    def train(self, steps: int) -> None:
        for _ in range(steps):
            self.model(self.ids).logits.float().pow(2).mean().backward()
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
            self.step += 1

    def objects(self) -> dict:
        return {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler}

    def save(self, root: Path, name: str) -> Path:
        progress = {"epoch": 0, "step": self.step, "batches_in_epoch": self.step}
        return write_checkpoint(OneProcess(), root, name, method=self.method, progress=progress, **self.objects())

    def trained(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}


def assert_identical(a, b, path="state"):
    """Same Python types all the way down; tensors with the same dtype, shape and bits."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a.view(torch.uint8) if a.dim() else a, b.view(torch.uint8) if b.dim() else b), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for key in a:
            assert_identical(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{path}.{i}")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b, path


# -- exact round trips --------------------------------------------------------------------------------------------------


def test_resume_restores_adamw_and_the_schedule_bit_for_bit(tiny, tmp_path):
    trained = Training(tiny, steps=3)
    saved_optimizer, saved_scheduler = copy.deepcopy(trained.optimizer.state_dict()), trained.scheduler.state_dict()
    assert isinstance(saved_optimizer["state"][0]["step"], torch.Tensor)  # torch keeps AdamW's step as a tensor
    trained.save(tmp_path, "step-3")

    fresh = Training(tiny, steps=0)
    directory, progress, skipped = resume_latest(tmp_path, OneProcess(), **fresh.objects())
    assert (directory, progress, skipped) == (tmp_path / "step-3", {"epoch": 0, "step": 3, "batches_in_epoch": 3}, [])
    assert_identical(fresh.optimizer.state_dict(), saved_optimizer)
    assert_identical(fresh.scheduler.state_dict(), saved_scheduler)
    assert_identical(fresh.trained(), trained.trained())
    trained.train(2)  # and both continue identically
    fresh.train(2)
    assert_identical(fresh.trained(), trained.trained())
    assert_identical(fresh.optimizer.state_dict(), trained.optimizer.state_dict())


def test_the_fp16_loss_scaler_state_survives_a_resume(tiny, tmp_path, capsys, cli_console):
    """fp16 training's GradScaler: its scale (halved after overflows, grown after growth_interval good steps) and its
    growth counter come back, so a resumed run does not restart from 65536 and overflow its way down again."""
    def scaler():
        return torch.amp.GradScaler("cpu", init_scale=2.0 ** 16, growth_interval=5)

    trained, before = Training(tiny, steps=1), scaler()
    before.scale(torch.ones(()))  # creates the scale tensors
    before.update(new_scale=512.0)
    before._growth_tracker.fill_(3)
    progress = {"epoch": 0, "step": 1, "batches_in_epoch": 1}
    write_checkpoint(OneProcess(), tmp_path, "step-1", method=trained.method, progress=progress, scaler=before,
                     **trained.objects())
    assert "scaler.json" in json.loads((tmp_path / "step-1" / MANIFEST_FILE).read_text())["files"]
    after = scaler()
    resume_latest(tmp_path, OneProcess(), scaler=after, **Training(tiny).objects())
    assert after.state_dict() == before.state_dict() and after.state_dict()["scale"] == 512.0
    assert after.state_dict()["_growth_tracker"] == 3
    trained.save(tmp_path / "older", "step-1")  # a checkpoint without scaler.json: the scale starts again, said once
    resume_latest(tmp_path / "older", OneProcess(), scaler=scaler(), **Training(tiny).objects())
    assert capsys.readouterr().err.count("holds no loss-scaler state (scaler.json)") == 1


def test_any_optimizer_state_of_tensors_and_plain_values_round_trips(tmp_path):
    """Like a hand-written AdamW's: an int step count per parameter; plus tuples, odd floats, bf16, 0-dim tensors."""
    state = {
        "state": {0: {"step": 7, "exp_avg": torch.randn(3, 2), "exp_avg_sq": torch.rand(3, 2).to(torch.bfloat16)},
                  1: {"step": 7, "scale": torch.tensor(0.5, dtype=torch.float64)}},
        "param_groups": [{"lr": 1e-3 / 3, "betas": (0.9, 0.999), "eps": float("inf"), "odd": float("nan"),
                          "name": None, "flag": True, "params": [0, 1], "__tensor__": "not a marker"}],
    }
    assert save_state(state, tmp_path, "optimizer") == ["optimizer.safetensors", "optimizer.json"]
    assert_identical(load_state(tmp_path, "optimizer"), state)


def test_rng_state_round_trips(tmp_path):
    import random

    import numpy as np

    save_state(rng_state(), tmp_path, "rng-0")
    expected = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    set_rng_state(load_state(tmp_path, "rng-0"))
    got = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])


# -- planted pickles -----------------------------------------------------------------------------------------------------


class _RunsCode:
    """Unpickling this creates `marker`: stands in for any code a planted file could run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def planted_pickle(marker: Path) -> bytes:
    payload = pickle.dumps(_RunsCode(marker))
    pickle.loads(payload).close()  # the payload is live: loading it does create the marker
    assert marker.exists()
    marker.unlink()
    return payload


@pytest.mark.parametrize(
    "name, forged_manifest",
    [(n, False) for n in CHECKPOINT_FILES + OLD_FILES] + [(n, True) for n in CHECKPOINT_FILES[:-1] + OLD_FILES],
)
def test_a_planted_pickle_in_any_checkpoint_file_runs_no_code(tiny, tmp_path, name, forged_manifest):
    """With `forged_manifest` the planter also rewrote manifest.json, so the file passes verification and is parsed."""
    marker = tmp_path / "code-ran"
    root = tmp_path / "checkpoints"
    directory = Training(tiny, steps=2).save(root, "step-2")
    (directory / name).write_bytes(planted_pickle(marker))
    if forged_manifest:
        write_manifest(directory, {"epoch": 0, "step": 2, "batches_in_epoch": 2}, 1)

    found, _, skipped = resume_latest(root, OneProcess(), **Training(tiny).objects())
    assert not marker.exists()
    if name in OLD_FILES:  # not listed in the manifest, so never opened: the checkpoint is still good
        assert found == directory
    else:
        assert found is None and len(skipped) == 1 and skipped[0].startswith("step-2 (")
        assert name in skipped[0]


def test_a_planted_pickle_as_the_final_weights_is_a_one_line_error(tmp_path):
    marker = tmp_path / "code-ran"
    (tmp_path / TRAINED_FILE).write_bytes(planted_pickle(marker))
    with pytest.raises(CheckpointError, match="trained.safetensors is damaged or not a safetensors file") as info:
        read_trained(tmp_path)
    assert "\n" not in str(info.value) and not marker.exists()


def test_no_module_can_unpickle():
    unsafe = re.compile(r"torch\.load\(|pickle\.loads?\(|weights_only\s*=\s*False|allow_pickle\s*=\s*True|import (c?pickle|dill|joblib)")
    offenders = [f"{p.relative_to(REPO)}: {m.group()}" for p in sorted((REPO / "lora_ft").rglob("*.py"))
                 for m in unsafe.finditer(p.read_text())]
    assert offenders == []


# -- damaged checkpoints -------------------------------------------------------------------------------------------------

@pytest.fixture
def cli_console():
    """Warnings reach stderr as the CLI prints them (console.py: `lora-ft: warning: ...`)."""
    from lora_ft import console

    console.configure(0)


@pytest.mark.parametrize("damage", ["truncate", "flip a byte"])
@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_a_damaged_latest_checkpoint_is_skipped_by_name(tiny, tmp_path, capsys, cli_console, name, damage):
    training = Training(tiny, steps=2)
    training.save(tmp_path, "step-2")
    at_step_2 = (training.trained(), copy.deepcopy(training.optimizer.state_dict()), training.scheduler.state_dict())
    training.train(2)
    latest = training.save(tmp_path, "step-4")
    data = bytearray((latest / name).read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x01
    (latest / name).write_bytes(bytes(data))

    fresh = Training(tiny)
    found, progress, skipped = resume_latest(tmp_path, OneProcess(), **fresh.objects())
    assert found == tmp_path / "step-2" and progress["step"] == 2
    assert_identical((fresh.trained(), fresh.optimizer.state_dict(), fresh.scheduler.state_dict()), at_step_2)
    assert len(skipped) == 1 and skipped[0].startswith("step-4 (") and name in skipped[0]
    skipping, continuing = capsys.readouterr().err.strip().splitlines()
    assert skipping.startswith(f"lora-ft: warning: --resume: skipping checkpoint {latest}: ") and name in skipping
    assert continuing == f"lora-ft: warning: --resume: continuing from {tmp_path / 'step-2'} (step 2), the newest intact checkpoint"


def test_a_checkpoint_cut_short_by_a_full_disk_leaves_the_previous_one_in_use(tiny, tmp_path, monkeypatch, capsys, cli_console):
    import lora_ft.checkpoint as checkpoint

    training = Training(tiny, steps=2)
    training.save(tmp_path, "step-2")
    before = (tmp_path / "step-2" / MANIFEST_FILE).read_bytes()
    training.train(2)
    real_save_state = checkpoint.save_state

    def disk_full(state, directory, stem):
        if stem == "scheduler":
            raise OSError(28, "No space left on device")
        return real_save_state(state, directory, stem)

    monkeypatch.setattr(checkpoint, "save_state", disk_full)
    for name in ("step-2", "step-4"):  # rewriting a checkpoint replaces it only once the new one is complete
        with pytest.raises(OSError, match="No space left"):
            training.save(tmp_path, name)
    assert (tmp_path / "step-2" / MANIFEST_FILE).read_bytes() == before and not (tmp_path / "step-4").exists()
    found, progress, skipped = resume_latest(tmp_path, OneProcess(), **Training(tiny).objects())
    assert found == tmp_path / "step-2" and progress["step"] == 2
    assert {s.split(" ")[0] for s in skipped} == {".partial-step-2", ".partial-step-4"}
    assert "incomplete" in capsys.readouterr().err


def test_resuming_with_more_processes_warns_once_that_random_draws_differ(tiny, tmp_path, capsys, cli_console):
    Training(tiny, steps=2).save(tmp_path, "step-2")  # one process: rng-0 only
    for rank in (0, 1):
        process = OneProcess()
        process.process_index, process.num_processes, process.is_main_process = rank, 2, rank == 0
        found, _, _ = resume_latest(tmp_path, process, **Training(tiny).objects())
        assert found == tmp_path / "step-2"
    assert capsys.readouterr().err.count("was written by 1 processes and this run has 2") == 1


def test_the_final_weights_are_verified_when_a_run_is_read(tiny, tmp_path):
    model, method, _ = tiny.adapt("gpt2", "lora")
    tiny.perturb(model)
    path = save_trained(model, method, tmp_path)
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[:-8]))
    with pytest.raises(CheckpointError, match=f"{re.escape(str(path))} is damaged or not a safetensors file"):
        load_trained(model, tmp_path)
    data[-8] ^= 0x40  # same size, one tensor bit changed: only the checksum sees it
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match the checksum saved with them"):
        load_trained(model, tmp_path)


# -- end to end ----------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # three tiny trainings: about 12 s of CPU
def test_resume_falls_back_past_a_damaged_checkpoint_to_the_same_final_weights(tmp_path, monkeypatch, capsys, cli_console):
    from lora_ft.config import config_from_dict
    from lora_ft.train import Trainer, train
    from tiny_runs import tiny_run_config

    reference = train(config_from_dict(tiny_run_config(tmp_path / "whole", checkpoint_every_steps=3)))
    cfg = config_from_dict(tiny_run_config(tmp_path / "resumed", checkpoint_every_steps=3))
    original = Trainer._training_step
    calls = {"n": 0}

    class Stop(Exception):
        pass

    def stops_after_7_steps(self, batch):
        calls["n"] += 1
        if calls["n"] > 7:
            raise Stop
        return original(self, batch)

    monkeypatch.setattr(Trainer, "_training_step", stops_after_7_steps)
    with pytest.raises(Stop):
        train(cfg)
    monkeypatch.setattr(Trainer, "_training_step", original)
    checkpoints = tmp_path / "resumed" / "checkpoints"
    assert sorted(d.name for d in checkpoints.iterdir()) == ["epoch-1", "step-3", "step-6"]
    damaged = checkpoints / "step-6" / "optimizer.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])
    capsys.readouterr()

    train(cfg, resume=True)
    assert f"skipping checkpoint {checkpoints / 'step-6'}: optimizer.safetensors has 100 bytes" in capsys.readouterr().err
    expected, got = read_trained(reference)[0], read_trained(tmp_path / "resumed")[0]
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)


def test_no_intact_checkpoint_is_a_one_line_error_and_old_pickles_are_never_loaded(tmp_path, capsys):
    from lora_ft.cli import main
    from tiny_runs import tiny_run_config

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_run_config(tmp_path / "run")))
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    shutil.copy(config, tmp_path / "run" / "config.yaml")  # the run's own config: --resume checks it first
    marker = tmp_path / "code-ran"
    old = checkpoints / "epoch-1"  # as lora-ft wrote it before: pickles and a progress.json
    old.mkdir()
    for name in OLD_FILES:
        (old / name).write_bytes(planted_pickle(marker))
    (old / "progress.json").write_text(json.dumps({"epoch": 1, "step": 4, "batches_in_epoch": 0}))
    (checkpoints / "step-6").mkdir()
    (checkpoints / "step-6" / "progress.json").write_text(json.dumps({"epoch": 1, "step": 6, "batches_in_epoch": 2}))

    assert main(["train", "--config", str(config), "--resume"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"lora-ft: error: --resume: no intact checkpoint under {checkpoints}: skipped step-6 (incomplete")
    assert "epoch-1 (written by an older lora-ft (training_state.pt is a pickle" in error
    assert not marker.exists()


def test_methods_never_import_checkpoint_code():
    """checkpoint.py uses methods (their checkpoint_metadata); the other way round would be an import circle."""
    upward = tuple(f"lora_ft.{m}" for m in ("checkpoint", "training_state", "train", "evaluate", "export"))
    offenders = []
    for path in sorted((REPO / "lora_ft" / "methods").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                package = ["lora_ft", "methods"][: 3 - node.level] if node.level else []
                base = ".".join(package + ([node.module] if node.module else []))
                imported = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            if any(name == up or name.startswith(up + ".") for name in imported for up in upward):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
