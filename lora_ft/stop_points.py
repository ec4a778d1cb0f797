"""A test hook that ends training abruptly at a named point, as `kill -9` would, so that crash-and-resume tests are
deterministic instead of racing a signal against the training loop.

    LORA_FT_STOP_AT=after-step-checkpoint:8 lora-ft train --config run.yaml    # exits 137 right after checkpoint step-8
    LORA_FT_STOP_AT=interrupt:after-step:3  lora-ft train --config run.yaml    # Ctrl-C (KeyboardInterrupt) after step 3
    LORA_FT_STOP_AT=SIGTERM:after-step:5    lora-ft train --config run.yaml    # a real SIGTERM to itself after step 5

`<point>[:<n>]` exits with `os._exit(137)` (no cleanup, no flush: what SIGKILL leaves behind); with the `interrupt:`
prefix it raises KeyboardInterrupt there instead (what Ctrl-C does), and with a signal's name as prefix the process
sends itself that signal (what a scheduler does, at a known step: the handler of stop_signals.py takes it from there).
Without `:<n>` the first time the point is reached counts. Unset (the normal case), `stop_point` costs one dictionary
look-up.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "LORA_FT_STOP_AT"
KILLED_EXIT_CODE = 137  # 128 + SIGKILL, what a shell reports for a process killed with kill -9

# Every named point, in the order a run reaches them; n is the step or the epoch number.
POINTS = {
    "after-step": "an optimizer step n is taken, before any checkpoint of that step",
    "after-step-checkpoint": "checkpoints/step-n is complete",
    "after-epoch-checkpoint": "checkpoints/epoch-n is complete, before results.json records epoch n",
    "after-epoch-results": "results.json records epoch n",
    "after-final-weights": "trained.safetensors is written, before results.json says 'trained'",
}


def stop_point(point: str, number: int | None = None) -> None:
    """Stop here if LORA_FT_STOP_AT names this point (and number)."""
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    interrupt = spec.startswith("interrupt:")
    send = spec.split(":", 1)[0] if spec.startswith("SIG") else None
    name, _, wanted = spec.removeprefix("interrupt:").removeprefix(f"{send}:").partition(":")
    if name not in POINTS:  # a typo in a test would otherwise pass silently by never stopping
        raise ValueError(f"{ENV_VAR}={spec!r}: unknown point {name!r}; known: {', '.join(POINTS)}")
    if point not in POINTS:
        raise ValueError(f"stop_point({point!r}): not one of the named points in lora_ft/stop_points.py")
    if name != point or (wanted and int(wanted) != number):
        return
    if interrupt:
        raise KeyboardInterrupt
    if send:
        os.kill(os.getpid(), signal.Signals[send])
        return
    os._exit(KILLED_EXIT_CODE)
