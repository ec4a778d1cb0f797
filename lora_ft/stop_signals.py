"""Stop signals during `lora-ft train`: finish the step, write a checkpoint, release the lock, exit with one line.

A scheduler stops a job with SIGTERM (SLURM's scancel and preemption, Kubernetes, `timeout`) or, asked to warn ahead,
another signal (`#SBATCH --signal=USR1@120`), and SIGKILL some seconds later; Ctrl-C is SIGINT. While `train` runs,
:func:`stop_signals` handles SIGTERM, SIGINT and SIGUSR1 (`lora-ft train --stop-signals` names others), so that the
run stops where it can be continued: `train` records status `interrupted` with the step reached, releases the run
lock, prints one line and exits with 128 + the signal's number (143 for SIGTERM, 138 for SIGUSR1, 130 for SIGINT).

When: while the training loop runs (:meth:`StopRequest.deferring`) the first signal only sets a flag. The loop looks
at it after every optimizer step (and after an epoch's last step and its validation); with several processes they
first agree on it (`cluster.StopAgreement`: every process stops after the same step, however the signal reached them).
The run then writes a checkpoint at that step, unless it just wrote one, and stops. Anywhere else (loading the model)
the run stops at once, and so it does on a second signal wherever it is, so that a user can always stop a run that
takes too long to checkpoint. A copy of the first signal within `DUPLICATE_WINDOW_S` is not a second signal: under
`accelerate launch` each worker gets the scheduler's signal (or the terminal's Ctrl-C) and, milliseconds later, the
copy torchrun forwards to it. Once stopping, further signals are ignored, so that no copy cuts the recording of the
interruption short (milliseconds; SIGKILL still ends a cleanup that hangs).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Iterator

from .errors import UserError

DEFAULT_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")
DUPLICATE_WINDOW_S = 2.0  # a launcher forwards the signal it got within milliseconds; a person presses again later


class Interrupted(KeyboardInterrupt):
    """A signal stopped the run. A KeyboardInterrupt, so that what already treats Ctrl-C as "stop now" (and no
    `except Exception`) does the same for SIGTERM."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def parse_signals(text: str | None) -> tuple[signal.Signals, ...]:
    """"TERM,USR1" / "SIGTERM, SIGUSR2" / "15,10" -> the signals; SIGINT is always among them (Ctrl-C)."""
    names = [part.strip() for part in (text or ",".join(DEFAULT_SIGNALS)).split(",") if part.strip()]
    found = []
    for name in names:
        try:
            found.append(signal.Signals(int(name)) if name.isdigit() else signal.Signals[
                name.upper() if name.upper().startswith("SIG") else "SIG" + name.upper()])
        except (KeyError, ValueError):
            raise UserError(f"--stop-signals: {name!r} is not a signal name (e.g. TERM, USR1, USR2) or number") from None
        if found[-1] in (signal.SIGKILL, signal.SIGSTOP):
            raise UserError(f"--stop-signals: {found[-1].name} cannot be handled by any process; choose e.g. USR1")
    return tuple(dict.fromkeys([*found, signal.SIGINT]))


class StopRequest:
    """The signal received (if any) and whether the run may finish what it is doing before it stops."""

    def __init__(self, duplicate_window_s: float = DUPLICATE_WINDOW_S) -> None:
        self.signum: int | None = None
        self.duplicate_window_s = duplicate_window_s
        self._first_at = 0.0
        self._defer = False
        self._stopping = False

    def handle(self, signum: int, _frame) -> None:
        """The signal handler: remember the first signal; stop at once unless the run is deferring, or on a second
        signal (a copy within `duplicate_window_s` of the first is the same request)."""
        if self._stopping:
            return
        now = time.monotonic()
        if self.signum is None:
            self.signum, self._first_at = signum, now
            if self._defer:
                return
        elif now - self._first_at < self.duplicate_window_s:
            return
        self.stop(self.signum)

    def stop(self, signum: int) -> None:
        """Stop now (raise Interrupted); later signals are ignored."""
        self.signum = self.signum or signum
        self._stopping = True
        raise Interrupted(signum)

    @contextlib.contextmanager
    def deferring(self, allowed: bool = True) -> Iterator[None]:
        """While open (and `allowed`), a first signal waits for the loop to look at it."""
        self._defer = allowed
        try:
            yield
        finally:
            self._defer = False

    def check(self) -> None:
        """Where the run can stop cleanly: raise Interrupted if a signal arrived."""
        if self.signum is not None:
            self.stop(self.signum)


@contextlib.contextmanager
def stop_signals(signals: tuple[signal.Signals, ...] | None = None) -> Iterator[StopRequest]:
    """Handle `signals` (default: SIGTERM, SIGINT, SIGUSR1) with a StopRequest while open; the previous handlers come
    back after. Signals can only be handled in the main thread: elsewhere (a library caller's worker thread) nothing
    changes."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {signum: signal.signal(signum, request.handle) for signum in (signals or parse_signals(None))}
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
