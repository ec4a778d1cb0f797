"""What only a CUDA device can check (marker `gpu`; skipped without one; scripts/gpu_check.sh runs them): training on the
GPU against the CPU, bf16 and fp16 (its loss scaler across a resume), the CUDA generator in checkpoints, and FSDP on two
GPUs. Never run yet: no GPU has been lent to this project (see README, "Multi-GPU and clusters")."""

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
from lora_ft.train import train
from tiny_runs import free_port, launch_env, tiny_run_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
REPO = Path(__file__).resolve().parents[1]


def no_dropout(run_dir: Path, **training) -> dict:
    config = tiny_run_config(run_dir, **training)
    config["method"]["dropout"] = 0.0  # the CPU and CUDA generators draw different masks
    return config


def test_lora_on_cuda_follows_the_cpu_run(tmp_path):
    train(config_from_dict(no_dropout(tmp_path / "cuda")))
    assert read_results(tmp_path / "cuda").extra["device"].startswith("cuda")
    path = tmp_path / "cpu.yaml"
    path.write_text(yaml.safe_dump(no_dropout(tmp_path / "cpu")))
    proc = subprocess.run([sys.executable, "-m", "lora_ft", "train", "--config", str(path)], cwd=REPO,
                          env=launch_env(CUDA_VISIBLE_DEVICES=""), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cpu, cuda = read_results(tmp_path / "cpu"), read_results(tmp_path / "cuda")
    for a, b in zip(cpu.epochs, cuda.epochs):
        assert b.train_loss == pytest.approx(a.train_loss, rel=1e-5)
        assert b.validation_loss == pytest.approx(a.validation_loss, rel=1e-5)
    expected, got = read_trained(tmp_path / "cpu")[0], read_trained(tmp_path / "cuda")[0]
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_resumes_to_the_uninterrupted_run(tmp_path, monkeypatch, precision):
    """A kill after step 5 (LORA_FT_STOP_AT, in a subprocess) and --resume: the same weights as the uninterrupted
    run; under fp16 the checkpoint holds the loss scaler's state (scaler.json) and the resume restores it."""
    config = no_dropout(tmp_path / "whole", mixed_precision=precision, checkpoint_every_steps=1)
    train(config_from_dict(config))
    interrupted = no_dropout(tmp_path / "resumed", mixed_precision=precision, checkpoint_every_steps=1)
    path = tmp_path / "resumed.yaml"
    path.write_text(yaml.safe_dump(interrupted))
    proc = subprocess.run([sys.executable, "-m", "lora_ft", "train", "--config", str(path)], cwd=REPO,
                          env=launch_env(LORA_FT_STOP_AT="after-step-checkpoint:5"), capture_output=True, text=True)
    assert proc.returncode == 137, proc.stderr[-3000:]
    assert (tmp_path / "resumed" / "checkpoints" / "step-5" / "scaler.json").is_file() == (precision == "fp16")
    train(config_from_dict(interrupted), resume=True)
    expected, got = read_trained(tmp_path / "whole")[0], read_trained(tmp_path / "resumed")[0]
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)


def test_checkpoints_carry_the_cuda_generator(tmp_path):
    from lora_ft.training_state import load_state, rng_state, save_state, set_rng_state

    torch.cuda.manual_seed_all(7)
    save_state(rng_state(), tmp_path, "rng-0")
    expected = torch.rand(4, device="cuda")
    set_rng_state(load_state(tmp_path, "rng-0"))
    assert torch.equal(torch.rand(4, device="cuda"), expected)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_fsdp_full_fine_tuning_on_two_gpus_resumes_bit_for_bit(tmp_path):
    def launch(run_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
        config = tiny_run_config(run_dir, batch_size=6, eval_batch_size=6, checkpoint_every_steps=1)
        config["task"]["max_train_examples"] = 24
        config["method"] = {"name": "ft"}
        path = tmp_path / f"{run_dir.name}.yaml"
        path.write_text(yaml.safe_dump(config))
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "configs" / "accelerate" / "fsdp_full_shard.yaml"), "--num_processes", "2",
               "--main_process_port", str(free_port()), "-m", "lora_ft", "train", "--config", str(path), *args]
        return subprocess.run(cmd, cwd=REPO, env=launch_env(**env), capture_output=True, text=True, timeout=900)

    assert launch(tmp_path / "whole").returncode == 0
    assert launch(tmp_path / "resumed", LORA_FT_STOP_AT="after-step-checkpoint:3").returncode != 0
    proc = launch(tmp_path / "resumed", "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected, got = read_trained(tmp_path / "whole")[0], read_trained(tmp_path / "resumed")[0]
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)
    assert os.path.isdir(tmp_path / "whole" / "trained-sharded")
