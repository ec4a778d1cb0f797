"""Two commands on one run directory: the run lock, results.json updates that keep every writer's record, atomic writes
that honour the umask, and the one-line disk-full error.

Concurrency is tested with real processes (a lock is about processes, not threads): small Python scripts that import
only lora_ft.run_lock / lora_ft.results start in well under a second; the tests that train use the tiny run config.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from lora_ft.atomic import DiskFullError, atomic_output, disk_full_error
from lora_ft.cli import main
from lora_ft.results import RunResults, read_results, write_results, write_text_atomic
from lora_ft.run_lock import LOCK_FILENAME, LockHolder, RunLock, RunLockError, _pid_namespace
from tiny_runs import tiny_run_config

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

# Holds the lock of argv[1] until a line arrives on stdin.
HOLDER = """
import sys
from lora_ft.run_lock import RunLock
lock = RunLock(sys.argv[1], command="lora-ft train --config holder.yaml").acquire()
print("held", flush=True)
sys.stdin.readline()
lock.release()
"""

# Waits for the file argv[2], then tries to take the lock of argv[1] once; the winner holds it until a line arrives on
# stdin (sent once every racer has answered, however slowly a busy machine runs them).
RACER = """
import sys, time
from pathlib import Path
from lora_ft.run_lock import RunLock, RunLockError
go = Path(sys.argv[2])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
try:
    lock = RunLock(sys.argv[1], command="racer").acquire()
except RunLockError as exc:
    print("refused:", exc, flush=True)
else:
    print("won", flush=True)
    sys.stdin.readline()
    lock.release()
"""


def _race(racers: list[subprocess.Popen], go: Path) -> list[tuple[str, str]]:
    """Start the racers at once; (first word of the answer, stderr) of each."""
    for racer in racers:
        _wait_for_line(racer, "ready")
    go.touch()
    answers = [racer.stdout.readline().strip().split(":")[0] for racer in racers]
    return [(answer, racer.communicate("\n", timeout=60)[1]) for answer, racer in zip(answers, racers)]

# Waits for argv[4], then updates results.json argv[3] times: "trainer" adds epoch records through write_results, any
# other name records evaluations of split <name>.
RESULTS_WRITER = """
import sys, time
from pathlib import Path
from lora_ft.results import EpochRecord, Evaluation, read_results, record_evaluation, write_results
run_dir, who, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
run = read_results(run_dir)
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
for i in range(n):
    if who == "trainer":
        run.add_epoch(EpochRecord(epoch=i + 1, step=10 * (i + 1), validation_loss=1.0 / (i + 1)))
        write_results(run_dir, run)
    else:
        record_evaluation(run_dir, Evaluation(split=who, epoch=i, scores={"BLEU": float(i)}), run=run)
"""


def _start(script: str, *args: str | Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=ENV, cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc


def _wait_for_line(proc: subprocess.Popen, expected: str) -> None:
    line = proc.stdout.readline().strip()
    assert line == expected, f"got {line!r}; stderr: {proc.stderr.read()}"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _stale_lock(directory: Path, **fields) -> LockHolder:
    """Write a lock file as a process of this host that has exited would have left it."""
    holder = LockHolder(pid=_dead_pid(), hostname=socket.gethostname(), command="lora-ft train --config old.yaml",
                        started_at="2026-01-01T00:00:00Z", token="0123456789abcdef", pid_namespace=_pid_namespace())
    holder = LockHolder(**{**holder.__dict__, **fields})
    directory.mkdir(parents=True, exist_ok=True)
    (directory / LOCK_FILENAME).write_bytes(holder.to_bytes())
    return holder


def _config_file(tmp_path: Path, run_dir: Path, **training) -> Path:
    path = tmp_path / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(tiny_run_config(run_dir, **training)))
    return path


# ---- the run lock ------------------------------------------------------------------------------------------------------


def test_a_second_train_into_a_directory_in_use_is_refused_in_one_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    holder = _start(HOLDER, run_dir)
    try:
        _wait_for_line(holder, "held")
        code = main(["train", "--config", str(_config_file(tmp_path, run_dir))])
        err = capsys.readouterr().err
        assert code == 2
        assert err.count("\n") == 1, err
        assert err.startswith(
            f"lora-ft: error: {run_dir} is in use by PID {holder.pid} on host {socket.gethostname()} "
            "(lora-ft train --config holder.yaml) since 20"
        ), err
        assert err.rstrip().endswith(f"; wait for it to finish, or delete {run_dir / LOCK_FILENAME} if that process is gone")
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILENAME]  # the refused command wrote nothing
    finally:
        holder.communicate("\n", timeout=30)
    assert holder.returncode == 0
    assert not run_dir.exists()  # the holder created the directory, wrote nothing into it, and removed it again


@pytest.mark.slow
def test_of_two_trains_into_one_output_dir_exactly_one_is_refused(tmp_path, capsys):
    """The acceptance case, with two real trains: one in a subprocess, one through the CLI while the first runs."""
    run_dir = tmp_path / "run"
    config = _config_file(tmp_path, run_dir, epochs=3)
    first = subprocess.Popen([sys.executable, "-m", "lora_ft", "train", "--config", str(config)], env=ENV, cwd=REPO,
                             text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (run_dir / LOCK_FILENAME).exists():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.01)
    second = main(["train", "--config", str(config)])
    err = capsys.readouterr().err
    out, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err[-3000:]
    assert second == 2
    assert err.count("\n") == 1 and f"{run_dir} is in use by PID {first.pid}" in err, err
    results = read_results(run_dir)
    assert results.status == "trained" and [e.epoch for e in results.epochs] == [1, 2, 3]
    assert not (run_dir / LOCK_FILENAME).exists()


def test_exactly_one_of_several_processes_gets_a_new_directory(tmp_path):
    run_dir, go = tmp_path / "new" / "run", tmp_path / "go"
    results = _race([_start(RACER, run_dir, go) for _ in range(4)], go)
    assert sorted(answer for answer, _ in results) == ["refused", "refused", "refused", "won"], results
    assert not run_dir.exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over_by_exactly_one(tmp_path):
    run_dir, go = tmp_path / "run", tmp_path / "go"
    _stale_lock(run_dir)
    results = _race([_start(RACER, run_dir, go) for _ in range(4)], go)
    assert sorted(answer for answer, _ in results) == ["refused", "refused", "refused", "won"], results
    warnings = [err for _, err in results if "taking over the stale lock" in err]
    assert len(warnings) == 1 and "which no longer runs" in warnings[0], results


def test_a_stale_lock_is_taken_over_by_train_with_a_warning(tmp_path, caplog):
    from lora_ft.config import config_from_dict
    from lora_ft.train import train

    run_dir = tmp_path / "run"
    stale = _stale_lock(run_dir)
    train(config_from_dict(tiny_run_config(run_dir, epochs=1)))
    assert read_results(run_dir).status == "trained"
    assert f"taking over the stale lock of PID {stale.pid} on host {stale.hostname}" in caplog.text
    assert not (run_dir / LOCK_FILENAME).exists()


def test_a_reused_pid_does_not_keep_a_lock_alive(tmp_path):
    """The recorded PID runs (it is ours), but it started at another time: a later process got the PID."""
    stale = _stale_lock(tmp_path / "run", pid=os.getpid(), process_start=1)
    assert stale.checkable_here() and not stale.is_running()
    with RunLock(tmp_path / "run", command="x"):
        pass


def test_a_lock_of_another_host_cannot_be_checked_and_says_how_to_remove_it(tmp_path):
    _stale_lock(tmp_path / "run", hostname="node-elsewhere", pid=os.getpid())
    with pytest.raises(RunLockError) as info:
        RunLock(tmp_path / "run", command="x").acquire()
    message = str(info.value)
    assert "\n" not in message
    assert "on host node-elsewhere (lora-ft train --config old.yaml) since 2026-01-01T00:00:00Z" in message
    assert message.endswith(
        f"this host cannot check whether that process still runs: wait for it to finish, "
        f"or delete {tmp_path / 'run' / LOCK_FILENAME} if you are sure it is gone"
    )


def test_a_requeued_job_takes_over_its_own_lock_from_another_host(tmp_path, monkeypatch, caplog):
    """SLURM requeues a preempted job under the same id, often on another node: its first attempt's lock cannot be
    checked from there, but it is the job's own (the attempt count went up), so the job takes it over."""
    _stale_lock(tmp_path / "run", hostname="node7", pid=os.getpid(), job_id="slurm:1234", job_attempt=0)
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with RunLock(tmp_path / "run", command="x") as lock:
        assert (lock.holder.job_id, lock.holder.job_attempt) == ("slurm:1234", 1)
        on_disk = LockHolder.parse((tmp_path / "run" / LOCK_FILENAME).read_bytes())
        assert (on_disk.job_id, on_disk.hostname) == ("slurm:1234", socket.gethostname())
    assert "taking over the stale lock of PID" in caplog.text and "an earlier attempt of this job (slurm:1234)" in caplog.text


@pytest.mark.parametrize("job, attempt, why", [
    ("999", "1", "another job"),
    ("1234", "0", "the same attempt: two steps of one job"),
    (None, None, "no job"),
])
def test_a_lock_of_another_job_or_of_this_attempt_elsewhere_is_refused(tmp_path, monkeypatch, job, attempt, why):
    _stale_lock(tmp_path / "run", hostname="node7", pid=os.getpid(), job_id="slurm:1234", job_attempt=0)
    for name, value in (("SLURM_JOB_ID", job), ("SLURM_RESTART_COUNT", attempt)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with pytest.raises(RunLockError) as info:
        RunLock(tmp_path / "run", command="x").acquire()
    message = str(info.value)
    assert "\n" not in message and "on host node7 (lora-ft train --config old.yaml, job slurm:1234)" in message, why
    if job == "1234":
        assert "another process of this same job (attempt 0)" in message
    assert LockHolder.parse((tmp_path / "run" / LOCK_FILENAME).read_bytes()).hostname == "node7"  # left alone


def test_a_lock_of_this_job_still_running_on_this_host_is_refused(tmp_path, monkeypatch):
    """Same job id, but the holder runs here (a second `train` in one job script): never taken over."""
    _stale_lock(tmp_path / "run", pid=os.getpid(), process_start=None, job_id="slurm:1234", job_attempt=0)
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with pytest.raises(RunLockError, match="another process of this same job"):
        RunLock(tmp_path / "run", command="x").acquire()


def test_scheduler_job_ids():
    from lora_ft.cluster import scheduler_job

    assert scheduler_job({}) == (None, None)
    assert scheduler_job({"SLURM_JOB_ID": "77"}) == ("slurm:77", 0)
    assert scheduler_job({"SLURM_JOB_ID": "77", "SLURM_RESTART_COUNT": "2"}) == ("slurm:77", 2)
    assert scheduler_job({"PBS_JOBID": "5.pbs01"}) == ("pbs:5.pbs01", None)
    assert scheduler_job({"LSB_JOBID": "9", "LSB_JOBINDEX": "3"}) == ("lsf:9[3]", None)
    assert scheduler_job({"LORA_FT_JOB_ID": "my-k8s-job", "SLURM_JOB_ID": "77"}) == ("job:my-k8s-job", None)


def test_an_unreadable_lock_file_is_reported_not_ignored(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_FILENAME).write_text("{half a record")
    old = time.time() - 60
    os.utime(tmp_path / "run" / LOCK_FILENAME, (old, old))
    with pytest.raises(RunLockError, match="holds a lock file that cannot be read .*if no lora-ft command is using"):
        RunLock(tmp_path / "run", command="x").acquire()


def test_the_lock_is_released_when_a_run_fails_or_is_refused(tmp_path, monkeypatch):
    from lora_ft.config import config_from_dict
    from lora_ft.resume import TrainingInterrupted
    from lora_ft.run_dir import RunDirectoryError
    from lora_ft.train import Trainer, train

    run_dir = tmp_path / "run"
    cfg = config_from_dict(tiny_run_config(run_dir, epochs=1))

    def interrupted(self, batch):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_training_step", interrupted)
    with pytest.raises(TrainingInterrupted):  # Ctrl-C, reported as one line (resume.py)
        train(cfg)
    assert read_results(run_dir).status == "interrupted"
    assert not (run_dir / LOCK_FILENAME).exists()
    with pytest.raises(RunDirectoryError, match="already holds a run"):  # refused inside Trainer.__init__
        train(cfg)
    assert not (run_dir / LOCK_FILENAME).exists()
    with RunLock(run_dir, command="x"):  # free again
        pass


def test_a_second_export_into_one_folder_is_refused(tmp_path):
    from lora_ft.export import export_run

    run_dir, out = tmp_path / "run", tmp_path / "out"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("not read: the export is refused before\n")
    with RunLock(out, command="lora-ft export --run other"):
        with pytest.raises(RunLockError, match=f"{out} is in use by PID {os.getpid()} .*lora-ft export --run other"):
            export_run(run_dir, out)


# ---- results.json --------------------------------------------------------------------------------------------------------


def test_concurrent_results_updates_keep_every_record(tmp_path):
    """A trainer writing epoch records and two evaluators recording evaluations, all at once: nothing is lost."""
    run_dir, go, n = tmp_path / "run", tmp_path / "go", 25
    write_results(run_dir, RunResults.start("run", {"training": {"seed": 1}}))
    writers = [_start(RESULTS_WRITER, run_dir, who, n, go) for who in ("trainer", "validation", "test")]
    for writer in writers:
        _wait_for_line(writer, "ready")
    go.touch()
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
    results = read_results(run_dir)
    assert [e.epoch for e in results.epochs] == list(range(1, n + 1))
    assert results.best_epoch == n
    recorded = sorted((e.split, e.epoch) for e in results.evaluations)
    assert recorded == sorted((split, i) for split in ("validation", "test") for i in range(n))
    assert sorted(os.listdir(run_dir)) == ["results.json"]  # no lock or temporary file left behind


# ---- atomic writes ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o007, 0o077])
def test_atomic_writes_honour_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        with open(tmp_path / "plain.txt", "w") as handle:  # what any other program would create
            handle.write("x")
        write_text_atomic(tmp_path / "atomic.txt", "x")
        with atomic_output(tmp_path / "library.bin") as tmp:
            tmp.write_bytes(b"x")
        with atomic_output(tmp_path / "tensors.safetensors") as tmp:
            save_file({"x": torch.zeros(2)}, str(tmp))  # safetensors 0.8 creates 0o600 whatever the umask
        write_results(tmp_path / "run", RunResults.start("run", {}))
        lock = RunLock(tmp_path / "run", command="x").acquire()
    finally:
        os.umask(previous)
    expected = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert expected == 0o666 & ~umask
    written = ("atomic.txt", "library.bin", "tensors.safetensors", "run/results.json", "run/.lock")
    for path in (tmp_path / name for name in written):
        assert path.stat().st_mode & 0o777 == expected, path
    lock.release()


# torch 2.13's torch.save and safetensors 0.8's save_file on a full filesystem (a 64 KiB tmpfs), as measured.
TORCH_FULL = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
TORCH_FULL.__context__ = RuntimeError("basic_ios::clear: iostream error")
TORCH_STREAM_FULL = RuntimeError("basic_ios::clear: iostream error")  # torch.save, when the disk fills at its end
SAFETENSORS_FULL = Exception("Error while serializing: I/O error: No space left on device (os error 28)")


@pytest.mark.parametrize(
    "error, reason",
    [
        (OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk quota exceeded"),
        (TORCH_FULL, "torch could not write it; most likely the disk is full or over quota"),
        (TORCH_STREAM_FULL, "torch could not write it; most likely the disk is full or over quota"),
        (SAFETENSORS_FULL, "no space left on device"),
    ],
    ids=["ENOSPC", "EDQUOT", "torch", "torch-stream", "safetensors"],
)
def test_a_full_disk_is_one_line_naming_the_file_and_keeps_the_previous_file(tmp_path, error, reason):
    target = tmp_path / "training_state.pt"
    target.write_bytes(b"previous good file")

    def full_disk_writer(path: Path) -> None:
        path.write_bytes(b"partial")
        raise error

    with pytest.raises(DiskFullError) as info:
        with atomic_output(target, overwrite=True) as tmp:
            full_disk_writer(tmp)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"could not write {target}: {reason} (")
    assert "free there). Free some space and run the command again" in message and "--resume" in message
    assert message.endswith("; the previous training_state.pt, if any, is kept")
    assert target.read_bytes() == b"previous good file"
    assert os.listdir(tmp_path) == ["training_state.pt"]  # the partial temporary file is gone


def test_other_write_errors_are_not_called_a_full_disk(tmp_path):
    assert disk_full_error(tmp_path / "x", OSError(errno.EACCES, "Permission denied")) is None
    assert disk_full_error(tmp_path / "x", RuntimeError("[enforce fail at inline_container.cc:1] . open failed")) is None
    with pytest.raises(PermissionError):
        with atomic_output(tmp_path / "x"):
            raise PermissionError(errno.EACCES, "Permission denied")
    assert os.listdir(tmp_path) == []


def test_a_full_disk_while_writing_results_is_a_user_error(tmp_path, monkeypatch, capsys):
    """Through the CLI: `lora-ft: error: could not write .../results.json: ...`, exit 2, the old results kept."""
    run = RunResults.start("run", {})
    write_results(tmp_path, run)
    before = (tmp_path / "results.json").read_bytes()
    real_fdopen = os.fdopen

    def full(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)

        class Full:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                handle.close()

            def write(self, data):
                raise OSError(errno.ENOSPC, "No space left on device")

        return Full()

    monkeypatch.setattr(os, "fdopen", full)
    with pytest.raises(DiskFullError, match=f"could not write {tmp_path / 'results.json'}: no space left on device"):
        write_results(tmp_path, run)
    monkeypatch.undo()
    assert (tmp_path / "results.json").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["results.json"]


def test_a_full_disk_during_training_fails_the_run_in_one_line(tmp_path, monkeypatch):
    """Whatever the checkpoint code writes with: torch's C++ message becomes a DiskFullError naming the run directory,
    results.json records it, and the run directory is released."""
    from lora_ft.config import config_from_dict
    from lora_ft.train import Trainer, train

    def full_disk(self, name):
        raise TORCH_FULL

    monkeypatch.setattr(Trainer, "save_checkpoint", full_disk)
    run_dir = tmp_path / "run"
    with pytest.raises(DiskFullError, match=f"^could not write {run_dir}: torch could not write it; most likely the disk"):
        train(config_from_dict(tiny_run_config(run_dir, epochs=1)))
    results = read_results(run_dir)
    assert results.status == "failed" and results.error.startswith(f"DiskFullError: could not write {run_dir}")
    assert not (run_dir / LOCK_FILENAME).exists()


def test_exported_files_honour_the_umask(tiny, tmp_path):
    from lora_ft.export import export_merged, export_peft

    model, method, arch = tiny.adapt("gpt2", "lora", rank=2, alpha=8.0, dropout=0.0, targets=["q", "v"])
    previous = os.umask(0o027)
    try:
        export_peft(model, method, arch, tmp_path / "adapter")
        export_merged(model, method, arch, None, tmp_path / "merged")
    finally:
        os.umask(previous)
    files = [p for folder in ("adapter", "merged") for p in (tmp_path / folder).iterdir()]
    assert {p.name for p in files} >= {"adapter_model.safetensors", "model.safetensors", "config.json"}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(0o640) for p in files}


def test_an_unreadable_results_lock_expires(tmp_path):
    """A writer killed between creating .results.lock and writing its record leaves an empty file: once older than any
    update takes, the next writer removes it instead of waiting forever."""
    from lora_ft.results import RESULTS_LOCK_FILENAME, RESULTS_LOCK_STALE_S

    write_results(tmp_path, RunResults.start("run", {}))
    (tmp_path / RESULTS_LOCK_FILENAME).write_bytes(b"")
    old = time.time() - RESULTS_LOCK_STALE_S - 60
    os.utime(tmp_path / RESULTS_LOCK_FILENAME, (old, old))
    write_results(tmp_path, RunResults.start("run", {}))
    assert sorted(os.listdir(tmp_path)) == ["results.json"]
