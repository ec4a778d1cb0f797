"""The SLURM job scripts of scripts/slurm/ (issue 18 item 3), run here without SLURM: fake `scontrol` (records the
requeue, names the head node 127.0.0.1) and `srun` (starts one task per "node" on this host with SLURM_NODEID set,
forwards USR1/TERM to them, as srun does), CPU processes in place of GPUs (gloo; FSDP through lora-ft's CPU switch).

SLURM's warning before the time limit (`--signal=B:USR1@180`) is a SIGUSR1 to the batch script: here the test sends it.
The script passes it on, the run stops after a checkpoint, the script requeues the job; the requeued job (the same
script again) continues with `--resume auto` and ends as a run that never stopped, bit for bit. Marked slow: five
launches of two processes.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from lora_ft.checkpoint import read_trained
from lora_ft.results import read_results
from tiny_runs import free_port, launch_env, tiny_run_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SCONTROL = """#!/bin/bash
echo "$@" >> "$FAKE_SLURM_LOG"
if [[ "$1 $2" == "show hostnames" ]]; then echo 127.0.0.1; fi
"""
SRUN = """#!/bin/bash
while [[ "$1" == --* ]]; do shift; done  # srun's own options
pids=()
for ((node = 0; node < SLURM_NNODES; node++)); do SLURM_NODEID=$node "$@" & pids+=($!); done
trap 'kill -USR1 "${pids[@]}" 2>/dev/null' USR1
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM
code=0
for pid in "${pids[@]}"; do
  while true; do wait "$pid"; c=$?; kill -0 "$pid" 2>/dev/null || break; done
  (( c > code )) && code=$c
done
exit "$code"
"""


def fake_slurm(tmp_path: Path, **variables: str) -> dict[str, str]:
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("scontrol", SCONTROL), ("srun", SRUN)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = launch_env(PYTHON=__import__("sys").executable, SLURM_SUBMIT_DIR=str(REPO), SLURM_JOB_ID="4242",
                     FAKE_SLURM_LOG=str(tmp_path / "slurm.log"), LORA_FT_PORT=str(free_port()), **variables)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return env


def run_config(tmp_path: Path, name: str) -> Path:
    config = tiny_run_config(tmp_path / name, epochs=6, batch_size=6, eval_batch_size=6, log_every_steps=1)  # 24 steps
    config["task"]["max_train_examples"] = 24
    config["method"] = {"name": "ft"}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def job(script: str, config: Path, env: dict, stop_after_step: int | None = None) -> int:
    """Run a job script as sbatch would; with `stop_after_step`, send it SIGUSR1 once that step is logged."""
    proc = subprocess.Popen(["bash", f"scripts/slurm/{script}", str(config)], env=env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if stop_after_step is not None:
            log, deadline = Path(yaml.safe_load(config.read_text())["output"]["dir"]) / "train.log", time.monotonic() + 600
            while not (log.is_file() and f" step {stop_after_step} " in log.read_text()):
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
                time.sleep(0.02)
            proc.send_signal(signal.SIGUSR1)
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    job.output = out + err
    return proc.returncode


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The one-node script, never stopped: exit 0, no requeue."""
    tmp = tmp_path_factory.mktemp("reference")
    env = fake_slurm(tmp, SLURM_GPUS_ON_NODE="2", ACCELERATE_CONFIG="configs/accelerate/fsdp_full_shard.yaml")
    assert job("one_node.sbatch", run_config(tmp, "run"), env) == 0, job.output[-3000:]
    assert not (tmp / "slurm.log").exists()
    return tmp / "run"


def assert_same_weights(got: Path, expected: Path) -> None:
    expected_weights, got_weights = read_trained(expected)[0], read_trained(got)[0]
    for name, tensor in expected_weights.items():
        torch.testing.assert_close(got_weights[name], tensor, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("script", ["one_node.sbatch", "multi_node.sbatch"])
def test_a_job_warned_of_its_time_limit_checkpoints_requeues_and_continues(tmp_path, reference, script):
    nodes = {"SLURM_GPUS_ON_NODE": "2"} if script == "one_node.sbatch" else {
        "SLURM_GPUS_ON_NODE": "1", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "node[1-2]"}
    env = fake_slurm(tmp_path, ACCELERATE_CONFIG="configs/accelerate/fsdp_full_shard.yaml", **nodes) \
        if script == "one_node.sbatch" else fake_slurm(tmp_path, **nodes)
    config = run_config(tmp_path, "run")
    code = job(script, config, env, stop_after_step=2)
    assert code != 0, job.output[-3000:]
    assert "stopped by SIGUSR1 after a checkpoint" in job.output and "requeued" in job.output
    assert (tmp_path / "slurm.log").read_text().splitlines()[-1] == "requeue 4242"
    results = read_results(tmp_path / "run")
    assert results.status == "interrupted" and results.extra["interrupted"]["signal"] == "SIGUSR1"
    assert results.extra["interrupted"]["checkpoint"] is True and results.extra["interrupted"]["step"] < 24
    lines = [line for line in job.output.splitlines() if line.startswith("lora-ft: error:")]
    assert len(lines) == 1 and "stopped by SIGUSR1" in lines[0], job.output[-3000:]

    env["SLURM_RESTART_COUNT"] = "1"  # the requeued job: the same script, the same id
    assert job(script, config, env) == 0, job.output[-3000:]
    assert read_results(tmp_path / "run").status == "trained"
    assert_same_weights(tmp_path / "run", reference)
