"""One writer per run directory: the lock file that keeps two lora-ft commands from writing the same run at once.

`lora-ft train` holds ``<run_dir>/.lock`` for its whole run; `lora-ft export` holds one in its output folder. A second
command is refused at once, in one line that says who holds the directory::

    lora-ft: error: runs/x is in use by PID 1234 on host node7 (lora-ft train --config ...) since
    2026-12-02T06:01:02Z; wait for it to finish, or delete runs/x/.lock if that process is gone

``results.json`` updates take a second, short lock (``.results.lock``, held for the milliseconds of one
read-modify-write; see ``results.py``), so that `lora-ft eval` can record evaluations while a run trains, and two evals
can run side by side.

How: the lock is a small JSON file created with ``O_CREAT | O_EXCL``, which is atomic on local filesystems and on
NFS (v3 and later), Lustre and GPFS, so two hosts of a cluster writing the same directory exclude each other. It
records the holder (PID, host, command, start time) for the error message. We chose this over ``fcntl.flock`` (which
the kernel releases when a process dies): on NFS mounted with ``nolock`` flock only excludes processes of the same
host, and on Lustre without ``-o flock`` it fails; a lock that silently does not lock is worse than one that needs
cleaning up after a crash. The ``filelock`` package's marker locks work the same way but record no command or start
time to show, and its version range comes with torch.

A lock left by a process that died (kill -9, a crashed node) is stale:

- on the same host (and PID namespace), the holder is checked: a PID that no longer runs, or now belongs to another
  process (Linux: a different start time), is taken over with a warning;
- another host's process cannot be checked from here: the error says so and how to remove the lock;
- unless it is this job's own: the lock records the scheduler's job id (cluster.py: SLURM_JOB_ID, PBS_JOBID, ...,
  or LORA_FT_JOB_ID). A requeued job runs again under the same id, often on another node, after its first attempt
  ended; it takes over its own lock with a warning. Another job's lock is refused as before, and so is a lock of the
  same SLURM attempt (SLURM_RESTART_COUNT) on another host or still running here: two steps of one job.

Several processes may find the same stale lock at once; ``fcntl.flock`` on that stale file (a same-host lock, which
every filesystem keeps consistent within one host) lets exactly one of them remove it before all try to create the
lock again, so exactly one wins.

Under ``accelerate launch`` / ``torchrun`` only the main process (``RANK`` 0) takes the lock: the other processes
write nothing before Accelerate's start-up barrier, which they pass only together with the main process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .atomic import disk_full_error
from .cluster import scheduler_job
from .errors import UserError

logger = logging.getLogger("lora_ft.run_lock")

LOCK_FILENAME = ".lock"
_MAX_LOCK_BYTES = 64 * 1024
_BEING_WRITTEN_S = 2.0  # an unreadable lock file younger than this is still being written by its creator


class RunLockError(UserError):
    """The directory is in use by another lora-ft command (or holds a lock file that cannot be read)."""


def _process_start(pid: int) -> int | None:
    """Linux: when process `pid` started (clock ticks since boot; tells a reused PID apart). None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the command name before ")" may hold spaces
    except (IndexError, ValueError):
        return None


def _pid_namespace() -> str | None:
    """Linux: this process's PID namespace. Two containers on one host may share a host name but not their PIDs."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class LockHolder:
    """What a lock file records about the process that holds it."""

    pid: int
    hostname: str
    command: str
    started_at: str  # UTC, e.g. 2026-12-02T06:01:02Z
    token: str  # random: tells two holders with the same PID apart
    process_start: int | None = None
    pid_namespace: str | None = None
    job_id: str | None = None  # the scheduler's, e.g. "slurm:1234" (cluster.scheduler_job)
    job_attempt: int | None = None  # SLURM_RESTART_COUNT: 0, then +1 per requeue

    @classmethod
    def of_this_process(cls, command: str) -> "LockHolder":
        job_id, attempt = scheduler_job()
        return cls(
            pid=os.getpid(), hostname=socket.gethostname(), command=" ".join(command.split()), started_at=_utc_now(),
            token=secrets.token_hex(8), process_start=_process_start(os.getpid()), pid_namespace=_pid_namespace(),
            job_id=job_id, job_attempt=attempt,
        )

    @classmethod
    def parse(cls, data: bytes) -> "LockHolder | None":
        """The holder recorded in a lock file; None if the bytes are not a complete record (still being written?)."""
        try:
            fields = json.loads(data.decode("utf-8"))
            known = {f.name for f in dataclasses.fields(cls)}
            holder = cls(**{k: v for k, v in fields.items() if k in known})
        except (UnicodeDecodeError, ValueError, TypeError, AttributeError):
            return None
        typed = isinstance(holder.pid, int) and holder.pid > 0 and all(
            isinstance(v, (int, type(None))) for v in (holder.process_start, holder.job_attempt)
        ) and isinstance(holder.job_id, (str, type(None)))
        texts = (holder.hostname, holder.command, holder.started_at, holder.token)
        return holder if typed and all(isinstance(t, str) for t in texts) else None

    def to_bytes(self) -> bytes:
        return (json.dumps(dataclasses.asdict(self)) + "\n").encode("utf-8")

    def describe(self) -> str:
        job = f", job {self.job_id}" if self.job_id else ""
        return f"PID {self.pid} on host {self.hostname} ({self.command}{job}) since {self.started_at}"

    def earlier_attempt_of(self, mine: "LockHolder") -> bool:
        """Whether this (another process's) lock was left by an earlier attempt of `mine`'s job: the same job id,
        and either a different attempt, or, where attempts are not counted, a process on another host (a requeued job
        runs only once its earlier attempt has ended). Never one still running here."""
        if not self.job_id or self.job_id != mine.job_id or self.token == mine.token:
            return False
        if self.checkable_here():
            return not self.is_running()
        if self.job_attempt is not None and mine.job_attempt is not None:
            return self.job_attempt != mine.job_attempt
        return self.hostname != mine.hostname

    def age_s(self) -> float | None:
        try:
            started = datetime.strptime(self.started_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            return None
        return (datetime.now(timezone.utc) - started).total_seconds()

    def checkable_here(self) -> bool:
        """Whether this process can tell if the holder still runs: same host, same PID namespace."""
        return self.hostname == socket.gethostname() and self.pid_namespace == _pid_namespace()

    def is_running(self) -> bool:
        """Whether the holder still runs (call only when :meth:`checkable_here`)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, under another user
        if self.process_start is not None:
            now = _process_start(self.pid)
            if now is not None and now != self.process_start:
                return False  # the PID was reused by a later process
        return True


class RunLock:
    """An exclusive lock on a directory, held by one process (``with RunLock(dir, command=...):`` or acquire/release).

    ``filename`` names the lock file inside the directory. The directory is created if it does not exist (and
    removed again on release if it is still empty), so that two commands starting in a new directory exclude each
    other too.
    """

    def __init__(self, directory: str | os.PathLike[str], *, command: str | None = None, filename: str = LOCK_FILENAME):
        self.directory = Path(directory)
        self.path = self.directory / filename
        self.command = command or " ".join(["lora-ft", *sys.argv[1:]])
        self.holder: LockHolder | None = None  # ours, while held
        self._mine = LockHolder.of_this_process(self.command)  # this process's record (renewed by every attempt)
        self._created_directory = False

    # ---- acquiring --------------------------------------------------------------------------------------------------

    def acquire(self, *, wait_s: float = 0.0, stale_after_s: float | None = None) -> "RunLock":
        """Take the lock, waiting up to ``wait_s`` seconds for a live holder; :class:`RunLockError` if it stays held.

        ``stale_after_s``: a lock held longer than this is stale whoever holds it (for locks held only for
        milliseconds, like ``.results.lock``); otherwise only a holder known to be dead is.
        """
        if self.holder is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        deadline = time.monotonic() + wait_s
        retries = 0
        while True:
            outcome = self._try_once(stale_after_s)
            if self.holder is not None:
                return self
            if outcome is None and retries < 200:  # the lock file changed under us (released, taken over): look again
                retries += 1
                continue
            if time.monotonic() >= deadline:
                if self._created_directory:  # refused: leave no empty directory behind
                    self._created_directory = False
                    with contextlib.suppress(OSError):
                        self.directory.rmdir()
                raise RunLockError(self._refusal(outcome))
            retries = 0
            time.sleep(0.02)

    def _try_once(self, stale_after_s: float | None) -> "LockHolder | str | None":
        """One attempt: our own holder record if we got the lock, else the live holder that has it, or a string
        saying why the lock file could not be read. None: try again at once (the lock changed under us)."""
        mine = LockHolder.of_this_process(self.command)
        self._mine = mine
        self._make_directory()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return self._inspect_existing(stale_after_s)
        except FileNotFoundError:
            return None  # the directory was removed meanwhile: create it again
        except PermissionError as exc:
            raise RunLockError(f"cannot write into {self.directory}: {exc.strerror}; choose a folder you can write to") from exc
        try:
            os.write(fd, mine.to_bytes())
            os.fsync(fd)
        except BaseException as exc:
            os.close(fd)
            os.unlink(self.path)
            full = disk_full_error(self.path, exc)
            if full is not None:
                raise full from exc
            raise
        os.close(fd)
        self.holder = mine
        return mine

    def _make_directory(self) -> None:
        if self.directory.is_dir():
            return
        if self.directory.exists():
            raise RunLockError(f"{self.directory} exists and is not a directory; choose another path")
        try:
            self.directory.mkdir(parents=True)
            self._created_directory = True
        except FileExistsError:
            pass  # another process made it a moment ago
        except PermissionError as exc:
            raise RunLockError(f"cannot create {self.directory}: {exc.strerror}; choose a folder you can write to") from exc

    def _inspect_existing(self, stale_after_s: float | None) -> "LockHolder | str | None":
        data, age = self._read()
        if data is None:
            return None  # released meanwhile
        holder = LockHolder.parse(data)
        if holder is None:
            if age < _BEING_WRITTEN_S:
                time.sleep(0.02)
                return None
            if stale_after_s is None or age <= stale_after_s:
                return f"{self.directory} holds a lock file that cannot be read ({self.path})"
            if self._remove_if_unchanged(data):
                logger.warning("%s: removed an unreadable lock file older than %.0f s", self.directory, stale_after_s)
            return None
        held_too_long = stale_after_s is not None and (holder.age_s() or 0.0) > stale_after_s
        dead = holder.checkable_here() and not holder.is_running()
        requeued = not dead and holder.earlier_attempt_of(self._mine)
        if not (dead or held_too_long or requeued):
            return holder
        why = ("which no longer runs" if dead else f"held for more than {stale_after_s:.0f} s" if held_too_long
               else f"an earlier attempt of this job ({holder.job_id}), requeued")
        if self._remove_if_unchanged(data):
            logger.warning("%s: taking over the stale lock of %s, %s", self.directory, holder.describe(), why)
        return None

    def _read(self) -> tuple[bytes | None, float]:
        try:
            with open(self.path, "rb") as handle:
                return handle.read(_MAX_LOCK_BYTES), time.time() - os.fstat(handle.fileno()).st_mtime
        except FileNotFoundError:
            return None, 0.0

    def _remove_if_unchanged(self, stale: bytes) -> bool:
        """Delete the lock file if it still holds the bytes `stale`. Of several processes that found the same stale
        lock, the one holding flock on that file deletes it; the others then see it gone or replaced by the winner's."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            if not _flock_briefly(fd):
                return False
            try:
                same_file = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                return False
            if not same_file or os.read(fd, _MAX_LOCK_BYTES) != stale:
                return False
            os.unlink(self.path)
            return True
        finally:
            os.close(fd)  # also releases the flock

    def _refusal(self, outcome: "LockHolder | str | None") -> str:
        remove = f"delete {self.path}"
        if isinstance(outcome, str):
            return f"{outcome}; if no lora-ft command is using {self.directory}, {remove}"
        if outcome is None:
            return f"{self.directory} is in use by another process (its lock changed while we waited); try again"
        message = f"{self.directory} is in use by {outcome.describe()}"
        if outcome.job_id and outcome.job_id == self._mine.job_id:
            return (f"{message}, another process of this same job (attempt {outcome.job_attempt}); two steps of one job "
                    f"cannot write one run: wait for it to finish, or {remove} if it is gone")
        if outcome.checkable_here():
            return f"{message}; wait for it to finish, or {remove} if that process is gone"
        return (
            f"{message}; this host cannot check whether that process still runs: wait for it to finish, "
            f"or {remove} if you are sure it is gone"
        )

    # ---- releasing --------------------------------------------------------------------------------------------------

    def release(self) -> None:
        """Give the lock up (only the process that took it does; a forked child does nothing). Idempotent."""
        mine, self.holder = self.holder, None
        if mine is None or mine.pid != os.getpid():
            return
        data, _ = self._read()
        current = None if data is None else LockHolder.parse(data)
        if current is not None and current.token == mine.token:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        else:
            logger.warning("%s: our lock was removed or taken over while we held it", self.directory)
        if self._created_directory:
            self._created_directory = False
            with contextlib.suppress(OSError):  # only if nothing was written into it (a refused or failed start)
                self.directory.rmdir()

    def __enter__(self) -> "RunLock":
        return self.acquire() if self.holder is None else self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _flock_briefly(fd: int, timeout_s: float = 2.0) -> bool:
    """Take an exclusive flock on `fd`, waiting up to `timeout_s` (a taker holds it for microseconds). Where flock is
    not supported at all, go ahead without it: then two takers racing within microseconds could both proceed."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        except OSError:
            return True


def is_main_launch_process() -> bool:
    """Whether this is the main process (global rank 0) of `accelerate launch` / torchrun; a plain process is."""
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


def hold_run_lock(run_dir: str | os.PathLike[str], command: str) -> RunLock | None:
    """Lock `run_dir` for a training run: the main process takes the lock (refused at once if another command holds
    it); the other processes of a multi-process launch take none and get None."""
    if not is_main_launch_process():
        return None
    return RunLock(run_dir, command=command).acquire()
