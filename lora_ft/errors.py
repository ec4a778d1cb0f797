"""The one place that says what a user error is.

A `UserError` is a mistake the user can fix (a bad config value, a missing or unreadable file, a run directory in the
wrong state). The CLI's entry point prints it as one line, `lora-ft: error: <message>`, and exits with 2. Anything else
that escapes is a bug: it keeps its traceback and exits with 1. Each module defines its own subclass (ConfigError,
TaskDataError, ...) so that callers can still catch the narrow kind.
"""

from __future__ import annotations

EXIT_OK, EXIT_BUG, EXIT_USER_ERROR = 0, 1, 2
# A training run stopped by a signal exits with 128 + its number, as shells and schedulers report such a process
# (resume.TrainingInterrupted): Ctrl-C, and a scheduler's stop (SLURM scancel or preemption, Kubernetes, `timeout`).
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class UserError(Exception):
    """A mistake in the user's input, files or run directory: reported in one line that names the thing and the fix."""
