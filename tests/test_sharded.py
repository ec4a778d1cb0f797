"""FSDP runs on CPU processes (issue 18): sharded checkpoints, resume on the same and on another number of processes,
the sharded final state of full fine-tuning and its export to one safetensors model.

Every launch is `accelerate launch --config_file configs/accelerate/fsdp_full_shard.yaml` with gloo on the CPU
(sharded.fsdp_on_cpu: Accelerate alone would run such a config unsharded). The model is the tiny random GPT-2 of
tests/tiny_runs.py (1.67 M parameters, 97% of them the embedding); batches of 6 (24 rows, 4 steps an epoch) split over
1, 2 or 3 processes. Marked slow: each launch takes 10-20 s on 2 cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lora_ft.checkpoint import read_trained
from lora_ft.config import config_from_dict
from lora_ft.results import read_results
from lora_ft.stop_points import ENV_VAR
from lora_ft.train import train
from tiny_runs import free_port, launch_env, tiny_run_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
FSDP_CONFIG = REPO / "configs" / "accelerate" / "fsdp_full_shard.yaml"


def fsdp_config(run_dir: Path, method: dict | None = None, **training) -> dict:
    config = tiny_run_config(run_dir, batch_size=6, eval_batch_size=6, checkpoint_every_steps=1, **training)
    config["task"]["max_train_examples"] = 24
    config["method"] = method or {"name": "ft"}
    return config


def fsdp_launch(tmp_path: Path, config: dict, processes: int, *args: str, env: dict | None = None,
                expect: int = 0) -> subprocess.CompletedProcess:
    path = tmp_path / f"{Path(config['output']['dir']).name}-{processes}.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG),
           "--num_processes", str(processes), "--main_process_port", str(free_port()),
           "-m", "lora_ft", "train", "--config", str(path), *args]
    proc = subprocess.run(cmd, env=launch_env(**(env or {})), capture_output=True, text=True, timeout=900, cwd=REPO)
    if expect == 0:
        assert proc.returncode == 0, proc.stderr[-4000:]
    else:
        assert proc.returncode != 0
    return proc


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return read_trained(run_dir)[0]


def losses(run_dir: Path) -> list[float]:
    """Train and validation loss of every epoch, in one list."""
    return [loss for e in read_results(run_dir).epochs for loss in (e.train_loss, e.validation_loss)]


@pytest.fixture(scope="module")
def ft_runs(tmp_path_factory):
    """One process (no FSDP), FSDP on 2 processes, and an FSDP 2-process run killed right after its step-3 checkpoint
    (kill -9 at LORA_FT_STOP_AT=after-step-checkpoint:3)."""
    tmp = tmp_path_factory.mktemp("fsdp")
    train(config_from_dict(fsdp_config(tmp / "one")))
    fsdp_launch(tmp, fsdp_config(tmp / "two"), 2)
    fsdp_launch(tmp, fsdp_config(tmp / "killed"), 2, env={ENV_VAR: "after-step-checkpoint:3"}, expect=137)
    return tmp


def test_fsdp_full_fine_tuning_follows_the_one_process_run(ft_runs):
    """FT sharded over 2 processes: the same losses as one unsharded process (rel 1e-5; the gradients are summed in
    another order) and the same final weights (to 1e-5), written as one shard per process."""
    one, two = ft_runs / "one", ft_runs / "two"
    assert read_results(two).extra["num_processes"] == 2
    assert losses(two) == pytest.approx(losses(one), rel=1e-5)
    assert not (two / "trained.safetensors").exists()
    shards = sorted(p.name for p in (two / "trained-sharded" / "model").iterdir())
    assert {name[:12] for name in shards} == {"shard-00001-", "shard-00002-"}  # every process its own files
    expected, got = weights(one), weights(two)  # consolidated from the shards in this process
    assert set(got) == set(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)


def test_every_checkpoint_is_sharded_and_its_manifest_covers_every_shard(ft_runs):
    checkpoint = ft_runs / "two" / "checkpoints" / "step-3"
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    assert manifest["sharded"] is True and manifest["num_processes"] == 2
    on_disk = sorted(str(p.relative_to(checkpoint)) for p in checkpoint.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert sorted(manifest["files"]) == on_disk
    assert {"optimizer.json", "rng-1.json"} <= set(on_disk)
    for folder in ("model", "optimizer"):  # one file per block or other tensor, from each process
        assert {name.split("/")[1][:12] for name in on_disk if name.startswith(folder + "/")} == {"shard-00001-", "shard-00002-"}
    assert not (checkpoint / "trained.safetensors").exists()
    tensors, metadata = read_trained(checkpoint)  # `eval --epochs N` reads a sharded checkpoint whole, in one process
    assert metadata["method"] == "ft" and tensors.keys() == weights(ft_runs / "two").keys()
    assert tensors["transformer.wte.weight"].shape == (50257, 32)


def test_a_killed_fsdp_run_resumes_on_2_processes_bit_for_bit_past_a_damaged_shard(ft_runs, tmp_path, capsys):
    """The killed run's newest checkpoint (step-3) has a damaged shard, one process 1 verifies: both processes skip
    it, continue from step-2, and end with the uninterrupted run's weights, bit for bit."""
    run = tmp_path / "killed"
    shutil.copytree(ft_runs / "killed", run)
    checkpoint = run / "checkpoints" / "step-3"
    shards = sorted(str(p.relative_to(checkpoint)) for p in checkpoint.glob("*/shard-*"))
    shard = checkpoint / shards[1]  # process 1 hashes shards 1, 3, 5, ... (manifest.verify_files)
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    proc = fsdp_launch(tmp_path, fsdp_config(run), 2, "--resume")
    assert "skipping checkpoint" in proc.stderr and "does not match its sha256" in proc.stderr
    assert proc.stderr.count("continuing from") == 1 and "step-2" in proc.stderr
    expected, got = weights(ft_runs / "two"), weights(run)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)
    assert losses(run) == pytest.approx(losses(ft_runs / "two"), rel=1e-6)


def test_a_killed_fsdp_run_resumes_on_3_processes_resharded(ft_runs, tmp_path):
    """The 2-process checkpoint read by 3 processes (DCP reshards it): the run ends within float32 rounding of the
    uninterrupted one (not bit for bit: 3 processes sum the gradients in another order)."""
    run = tmp_path / "killed"
    shutil.copytree(ft_runs / "killed", run)
    proc = fsdp_launch(tmp_path, fsdp_config(run), 3, "--resume")
    assert "written by 2 processes and this run has 3" in proc.stderr
    assert read_results(run).extra["num_processes"] == 3
    assert {p.name[:12] for p in (run / "trained-sharded" / "model").iterdir()} == {f"shard-0000{i}-" for i in (1, 2, 3)}
    expected, got = weights(ft_runs / "two"), weights(run)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)


def test_the_sharded_final_state_exports_to_one_safetensors_that_plain_transformers_loads(ft_runs, tmp_path):
    from lora_ft import cli
    from transformers import AutoModelForCausalLM

    out = tmp_path / "merged"
    assert cli.main(["export", "--run", str(ft_runs / "two"), "--out", str(out), "--format", "merged"]) == 0
    assert [p.name for p in out.glob("*.safetensors")] == ["model.safetensors"]
    model = AutoModelForCausalLM.from_pretrained(out)
    state = dict(model.named_parameters())
    for name, tensor in weights(ft_runs / "two").items():
        torch.testing.assert_close(state[name].detach(), tensor, rtol=0, atol=0, msg=name)


def test_eval_scores_the_sharded_final_weights_and_an_epoch_checkpoint(ft_runs, tmp_path, capsys):
    from lora_ft import cli

    run = tmp_path / "two"
    shutil.copytree(ft_runs / "two", run)
    assert cli.main(["eval", "--run", str(run), "--epochs", "last", "--no-meteor"]) == 0
    assert cli.main(["eval", "--run", str(run), "--epochs", "1", "--no-meteor"]) == 0
    assert {e.epoch for e in read_results(run).evaluations} == {1, 2}


def test_lora_under_fsdp_gathers_its_small_final_weights(tmp_path):
    """LoRA under FSDP: sharded checkpoints, but the final trained.safetensors as always (gathered: kilobytes), equal
    to one process's (dropout off: its draws are per process)."""
    method = {"name": "lora", "rank": 2, "alpha": 4, "dropout": 0.0, "targets": ["q", "v"]}
    train(config_from_dict(fsdp_config(tmp_path / "one", method, epochs=1)))
    fsdp_launch(tmp_path, fsdp_config(tmp_path / "two", method, epochs=1), 2)
    assert (tmp_path / "two" / "trained.safetensors").is_file() and not (tmp_path / "two" / "trained-sharded").exists()
    assert json.loads((tmp_path / "two" / "checkpoints" / "epoch-1" / "manifest.json").read_text())["sharded"] is True
    expected, got = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert set(got) == set(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)
    assert os.path.getsize(tmp_path / "two" / "trained.safetensors") < 10_000
