"""Cluster runs (issue 18): a stop signal checkpoints and exits with its code, `--resume auto` serves a job's first start
and every requeue, several processes stop after the same step, and a 2-"node" launch on localhost equals the one-node
2-process run.

One-process cases run in this process (cli.main, the tiny run of tests/tiny_runs.py); a signal at a known step comes
from the LORA_FT_STOP_AT hook (`SIGTERM:after-step:5`: the process sends itself a real SIGTERM, which goes through the
installed handler). Multi-process cases launch `accelerate launch --multi_gpu` (torchrun and gloo on the CPU) and are
marked slow.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from lora_ft import cli
from lora_ft.checkpoint import read_trained
from lora_ft.config import config_from_dict
from lora_ft.resume import ResumeConfigError
from lora_ft.results import RunResults, read_results, write_results
from lora_ft.run_dir import RunDirectoryError, resume_or_start
from lora_ft.stop_points import ENV_VAR
from lora_ft.stop_signals import parse_signals
from lora_ft.train import train
from tiny_runs import free_port, launch_env, tiny_run_config

REPO = Path(__file__).resolve().parents[1]


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def assert_same_weights(got: Path, expected: Path) -> None:
    expected_weights, got_weights = read_trained(expected)[0], read_trained(got)[0]
    assert set(got_weights) == set(expected_weights)
    for name, tensor in expected_weights.items():
        torch.testing.assert_close(got_weights[name], tensor, rtol=0, atol=0, msg=name)


def assert_same_epochs(got: Path, expected: Path) -> None:
    """Same epochs and losses; the train loss to 1e-6: an epoch's loss sum is folded into float64 at every host sync,
    and a checkpoint adds one (the weights, above, are bit for bit)."""
    table = lambda run: [(e.epoch, e.step, e.train_loss, e.validation_loss) for e in read_results(run).epochs]  # noqa: E731
    assert [row[:2] for row in table(got)] == [row[:2] for row in table(expected)]
    for got_row, expected_row in zip(table(got), table(expected)):
        assert got_row[2:] == pytest.approx(expected_row[2:], rel=1e-6)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted one-process run (2 epochs of 4 steps, epoch checkpoints only)."""
    return train(config_from_dict(tiny_run_config(tmp_path_factory.mktemp("reference") / "run")))


# ---------------------------------------------------------------------------------------- one process: stop and requeue


def test_sigterm_mid_run_checkpoints_exits_143_and_resume_auto_continues_to_the_same_weights(
        tmp_path, reference, monkeypatch, capsys):
    """The job script's one command, `train ... --resume auto`, twice: the first start gets SIGTERM after step 5 (no
    checkpoint is due there), finishes the step, writes checkpoint step-5, exits 143 with one line; the requeue
    continues from step 5 and ends bit for bit with the uninterrupted run's weights and epoch records."""
    config_path = write_config(tmp_path / "run.yaml", tiny_run_config(tmp_path / "run"))
    command = ["train", "--config", str(config_path), "--resume", "auto"]
    monkeypatch.setenv(ENV_VAR, "SIGTERM:after-step:5")
    assert cli.main(command) == 143
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("lora-ft: error:") == 1, err
    assert (f"stopped by SIGTERM at step 5 of 8, checkpoint at that step written; resume with: lora-ft train --config "
            f"{config_path} --resume auto") in err
    run = tmp_path / "run"
    assert (run / "checkpoints" / "step-5" / "manifest.json").is_file() and not (run / ".lock").exists()
    results = read_results(run)
    assert results.status == "interrupted"
    assert results.extra["interrupted"] == {"signal": "SIGTERM", "step": 5, "checkpoint": True}

    monkeypatch.delenv(ENV_VAR)
    assert cli.main(command) == 0
    assert read_results(run).status == "trained" and "interrupted" not in read_results(run).extra
    assert_same_weights(run, reference)
    assert_same_epochs(run, reference)


def test_resume_auto_starts_again_a_run_stopped_before_its_first_checkpoint(tmp_path, reference, monkeypatch, capsys):
    """A bare Ctrl-C after step 1 (no checkpoint yet) and the same `--resume auto` command: the run starts again,
    replacing only lora-ft's files (a user's notes stay), and ends as the uninterrupted run."""
    config_path = write_config(tmp_path / "run.yaml", tiny_run_config(tmp_path / "run"))
    command = ["train", "--config", str(config_path), "--resume", "auto"]
    monkeypatch.setenv(ENV_VAR, "interrupt:after-step:1")
    assert cli.main(command) == 130
    assert f"before the first checkpoint (nothing to resume); start again with: lora-ft train --config {config_path} " \
           "--resume auto" in capsys.readouterr().err
    (tmp_path / "run" / "notes.md").write_text("mine")
    monkeypatch.delenv(ENV_VAR)
    assert cli.main(command) == 0
    assert "stopped before its first checkpoint; starting it again" in capsys.readouterr().err
    assert (tmp_path / "run" / "notes.md").read_text() == "mine"
    assert_same_weights(tmp_path / "run", reference)


def test_resume_auto_decides_from_the_run_directory(tmp_path, reference):
    resolved = lambda name: config_from_dict(tiny_run_config(tmp_path / name)).to_dict()  # noqa: E731
    assert resume_or_start(tmp_path / "new", resolved("new")) == (False, False)  # nothing there: start
    assert resume_or_start(reference, read_results(reference).config) == (True, False)  # checkpoints: continue

    def stopped_run(name: str, status: str, **changes) -> Path:
        run_config = config_from_dict({**tiny_run_config(tmp_path / name), **changes})
        run = RunResults.start(name, run_config.to_dict())
        run.status = status
        write_results(tmp_path / name, run)
        (tmp_path / name / "config.yaml").write_text("# Resolved config of this run.\n" + run_config.to_yaml())
        return tmp_path / name

    assert resume_or_start(stopped_run("stopped", "interrupted"), resolved("stopped")) == (False, True)
    with pytest.raises(RunDirectoryError, match="holds a trained run without checkpoints, so there is nothing to continue"):
        resume_or_start(stopped_run("finished", "trained"), resolved("finished"))
    other = stopped_run("other", "failed", method={"name": "lora", "rank": 8, "alpha": 4, "targets": ["q", "v"]})
    with pytest.raises(ResumeConfigError, match="method.rank 8 -> 2"):
        resume_or_start(other, resolved("other"))


def test_stop_signals_parse_and_default_to_term_usr1_and_int():
    assert parse_signals(None) == (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
    assert parse_signals("USR2, SIGTERM,15") == (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)
    for bad, why in (("TERN", "not a signal name"), ("KILL", "cannot be handled")):
        with pytest.raises(Exception, match=why):
            parse_signals(bad)
    parse = lambda *argv: cli.build_parser().parse_args(["train", "--config", "x.yaml", *argv])  # noqa: E731
    for argv, resume, overrides in (
        (["a=1", "--resume", "auto"], "auto", ["a=1"]),
        (["--resume", "auto", "a=1", "b=2"], "auto", ["a=1", "b=2"]),
        (["--resume", "a=1", "b=2"], True, ["a=1", "b=2"]),  # as before --resume auto: overrides after --resume
        (["a=1", "--resume"], True, ["a=1"]),
    ):
        args = parse(*argv)
        assert (args.resume, cli.train_overrides(args)) == (resume, overrides), argv


# ------------------------------------------------------------------------------------------------ several processes


def launch_command(config_path: Path, processes: int, *args: str, launcher: tuple[str, ...] = ()) -> list[str]:
    """`accelerate launch` with `processes` CPU processes (torchrun + gloo: `--multi_gpu`, see tests/test_train.py)."""
    multi = ("--multi_gpu",) if processes > 1 or launcher else ("--cpu",)
    return [sys.executable, "-m", "accelerate.commands.launch", *multi, "--num_processes", str(processes),
            "--mixed_precision", "no", "--dynamo_backend", "no", *launcher,
            "-m", "lora_ft", "train", "--config", str(config_path), *args]


def run_launch(config_path: Path, processes: int, *args: str) -> subprocess.CompletedProcess:
    cmd = launch_command(config_path, processes, *args, launcher=("--num_machines", "1", "--main_process_port",
                                                                    str(free_port())))
    proc = subprocess.run(cmd, env=launch_env(), capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_two_processes_stop_after_the_same_step_when_only_one_gets_the_signal(tmp_path):
    """SIGUSR1 to rank 1 alone (a scheduler signalling one node first): the processes agree at the next step's end,
    both stop after that step, one checkpoint with both processes' RNG states, exit 138; `--resume auto` on 2
    processes then ends with the uninterrupted 2-process run's weights, bit for bit."""
    psutil = pytest.importorskip("psutil")
    config = tiny_run_config(tmp_path / "run", epochs=10)  # 40 steps: time to signal mid-run
    reference_config = tiny_run_config(tmp_path / "reference", epochs=10)
    run_launch(write_config(tmp_path / "reference.yaml", reference_config), 2)

    config_path = write_config(tmp_path / "run.yaml", config)
    cmd = launch_command(config_path, 2, "--resume", "auto",
                         launcher=("--num_machines", "1", "--main_process_port", str(free_port())))
    proc = subprocess.Popen(cmd, env=launch_env(), cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        log, deadline = tmp_path / "run" / "train.log", time.monotonic() + 600
        while not (log.is_file() and " step 1 " in log.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.02)
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
                   if p.environ().get("RANK") == "1" and "lora_ft" in " ".join(p.cmdline())]
        assert len(workers) == 1, workers
        workers[0].send_signal(signal.SIGUSR1)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    results = read_results(tmp_path / "run")
    step = results.extra["interrupted"]["step"]
    assert results.status == "interrupted" and results.extra["interrupted"]["signal"] == "SIGUSR1", err[-3000:]
    assert 1 <= step < 40 and results.extra["interrupted"]["checkpoint"] is True
    checkpoint = next(d for d in (tmp_path / "run" / "checkpoints").iterdir()
                      if yaml.safe_load((d / "progress.json").read_text())["step"] == step)
    assert {"rng-0.json", "rng-1.json"} <= {p.name for p in checkpoint.iterdir()}
    lines = [line for line in err.splitlines() if line.startswith("lora-ft: error:")]
    assert len(lines) == 1 and f"stopped by SIGUSR1 at step {step} of 40" in lines[0], err[-3000:]
    assert "exitcode  : 138" in err or "exit code 138" in err or "138" in err
    assert not (tmp_path / "run" / ".lock").exists()

    run_launch(config_path, 2, "--resume", "auto")
    assert_same_weights(tmp_path / "run", tmp_path / "reference")
    assert_same_epochs(tmp_path / "run", tmp_path / "reference")


ACCELERATE_CONFIGS = REPO / "configs" / "accelerate"


def node_launchers(config_path: Path, flavour: str) -> list[list[str]]:
    """Two launchers, machine ranks 0 and 1, one CPU process each, meeting on 127.0.0.1."""
    port = str(free_port())
    if flavour == "ddp":
        return [launch_command(config_path, 2, launcher=(
            "--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
            "--main_process_port", port)) for rank in (0, 1)]
    return [[sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIGS / "multi_node.yaml"),
             "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
             "--main_process_port", port, "-m", "lora_ft", "train", "--config", str(config_path)] for rank in (0, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["ddp", "fsdp"])
def test_two_nodes_on_localhost_equal_one_node_with_two_processes(tmp_path, flavour):
    """Two launchers, `--num_machines 2 --machine_rank 0/1` with one CPU process each, meeting on 127.0.0.1 (what
    scripts/slurm/multi_node.sbatch does across hosts): the same losses and weights, bit for bit, as one launcher
    with two processes. DDP through launcher flags; FSDP through the shipped configs/accelerate/multi_node.yaml
    against fsdp_full_shard.yaml on one node."""
    one_node = write_config(tmp_path / "one.yaml", tiny_run_config(tmp_path / "one", epochs=1))
    two_nodes = write_config(tmp_path / "two.yaml", tiny_run_config(tmp_path / "two", epochs=1))
    if flavour == "ddp":
        run_launch(one_node, 2)
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ACCELERATE_CONFIGS / "fsdp_full_shard.yaml"), "--num_processes", "2", "--main_process_port",
               str(free_port()), "-m", "lora_ft", "train", "--config", str(one_node)]
        proc = subprocess.run(cmd, env=launch_env(), capture_output=True, text=True, timeout=900, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-3000:]
    launchers = [subprocess.Popen(cmd, env=launch_env(), cwd=REPO, text=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE) for cmd in node_launchers(two_nodes, flavour)]
    for launcher in launchers:
        _, err = launcher.communicate(timeout=900)
        assert launcher.returncode == 0, err[-3000:]
    assert read_results(tmp_path / "two").extra["num_processes"] == 2
    if flavour == "fsdp":  # really sharded: the checkpoints hold one shard per process
        assert {p.name[:12] for p in (tmp_path / "two" / "checkpoints" / "epoch-1" / "model").iterdir()} == {
            "shard-00001-", "shard-00002-"}
    assert_same_weights(tmp_path / "two", tmp_path / "one")
    assert_same_epochs(tmp_path / "two", tmp_path / "one")
