"""SIGTERM and SIGINT during `lora-ft train`: the run ends as an interrupted run, not as one that claims to train.

A scheduler stops a job with SIGTERM (SLURM's scancel and preemption, Kubernetes, `timeout`), and SIGKILL some seconds
later; Ctrl-C is SIGINT. Python's default SIGTERM ends the process without any cleanup: results.json kept status
`training` and the lock stayed. While `train` runs, :func:`stop_signals` turns both signals into :class:`Interrupted`,
so that `train` records status `interrupted` with the step reached, releases the run lock, prints one line and exits
with 128 + the signal's number (130 for SIGINT, 143 for SIGTERM).

When: the first signal only sets a flag if the run said it can stop at a better moment (:meth:`StopRequest.deferring`:
the training loop, in a one-process run, between optimizer steps), and the loop stops at the next
:meth:`StopRequest.check`, after the step it is taking and that step's scheduled checkpoint. Anywhere else (loading,
validation, writing a checkpoint) the run stops at once, as it does on a second signal wherever it is: a scheduler's
SIGKILL does not wait.

The flag is where "finish the step, write a checkpoint, then stop" goes (a later issue): `check` can then checkpoint
before raising. With several processes the first signal stops at once too: each process gets the signal, but not
between the same two steps, and one that stopped after its step while another waits in the next step's all-reduce would
hang both; stopping at one agreed step needs the processes to agree on it first (an all-reduce of the flag).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

HANDLED = (signal.SIGTERM, signal.SIGINT)


class Interrupted(KeyboardInterrupt):
    """A signal stopped the run. A KeyboardInterrupt, so that what already treats Ctrl-C as "stop now" (and no
    `except Exception`) does the same for SIGTERM."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopRequest:
    """The signal received (if any) and whether the run may finish what it is doing before it stops."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._defer = False
        self._stopping = False

    def handle(self, signum: int, _frame) -> None:
        """The signal handler: remember the first signal; stop at once unless the run is deferring (a second signal
        stops at once anyway). Once stopping, further signals are ignored: a job's processes often get SIGTERM twice
        (from the scheduler and from the launcher that forwards it), and the second must not cut short the recording
        of the interruption (milliseconds; SIGKILL still ends a cleanup that hangs)."""
        if self._stopping:
            return
        first = self.signum is None
        if first:
            self.signum = signum
        if not (first and self._defer):
            self._stop()

    def _stop(self) -> None:
        self._stopping = True
        raise Interrupted(self.signum)

    @contextlib.contextmanager
    def deferring(self, allowed: bool = True) -> Iterator[None]:
        """While open (and `allowed`), a first signal waits for the next :meth:`check`."""
        self._defer = allowed
        try:
            yield
        finally:
            self._defer = False

    def check(self) -> None:
        """Where the run can stop cleanly: raise Interrupted if a signal arrived."""
        if self.signum is not None:
            self._stop()


@contextlib.contextmanager
def stop_signals() -> Iterator[StopRequest]:
    """Handle SIGTERM and SIGINT with a StopRequest while open; the previous handlers come back after. Signals can only
    be handled in the main thread: elsewhere (a library caller's worker thread) nothing changes."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {signum: signal.signal(signum, request.handle) for signum in HANDLED}
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
