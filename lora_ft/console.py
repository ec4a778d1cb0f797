"""What `lora-ft` prints while it works: log lines and progress bars, set once per command by `-q` / `-v`.

- default: warnings on stderr; a progress bar only when stderr is a terminal: in a cluster job's log file or a pipe
  the bar's carriage-return redraws are noise (train.log holds the run's progress lines either way).
- `-q`: errors only, no bars.  `-v`: progress lines on stderr too (one per `training.log_every_steps`, as in
  train.log; `eval`: one per decoded batch), the way to follow a batch job's log.  `-vv`: debug lines.
lora-ft never prints colour codes, so NO_COLOR needs nothing more.

Under `accelerate launch` / torchrun every process runs the same command: only the main one (global rank 0) prints
warnings, progress lines and results; the others print errors only, so that N processes do not print everything N
times while a failure in any one of them still shows.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from .run_lock import is_main_launch_process

_HANDLER_NAME = "lora_ft-console"
_show_progress_bars = True  # library use (no CLI): bars as tqdm decides


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the record (a test's capture, a redirected stream)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; the property always answers sys.stderr
        pass


class _ConsoleFormatter(logging.Formatter):
    """`lora-ft: warning: ...` like the CLI's `lora-ft: error: ...`; progress and debug lines with the time."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            return f"lora-ft: {record.levelname.lower()}: {record.getMessage()}"
        return f"{self.formatTime(record, '%H:%M:%S')} {record.getMessage()}"


def configure(verbosity: int) -> None:
    """verbosity: -1 quiet, 0 default, 1 verbose, 2 debug (a process other than the main one of a launch: quiet)."""
    global _show_progress_bars
    if not is_main_launch_process():
        verbosity = -1
        warnings.simplefilter("ignore")  # Python's warnings too: the main process prints them once
    interactive = sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    _show_progress_bars = verbosity >= 0 and interactive
    if not _show_progress_bars:
        _quiet_library_progress_bars()
    if verbosity < 0:
        level = logging.ERROR
    elif verbosity >= 2:
        level = logging.DEBUG
    elif verbosity == 1:
        level = logging.INFO
    else:
        level = logging.WARNING
    package_logger = logging.getLogger("lora_ft")
    for handler in [h for h in package_logger.handlers if h.get_name() == _HANDLER_NAME]:
        package_logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setLevel(level)
    handler.setFormatter(_ConsoleFormatter())
    package_logger.addHandler(handler)
    if level < logging.WARNING:
        package_logger.setLevel(min(package_logger.getEffectiveLevel(), level))


def _quiet_library_progress_bars() -> None:
    """The Hugging Face libraries draw their own bars (loading weights, converting GGUF, reading a data set); in a log
    file they are the same carriage-return noise. Their switches are environment variables read at import (a user's
    own setting wins), and a call for a transformers that is already imported."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


def progress_bars() -> bool:
    """Whether to draw progress bars (callers still hide them on non-main processes)."""
    return _show_progress_bars
