"""The run directory: its file names, the checks that keep a user's runs from being lost, and its train.log.

A run directory holds config.yaml (the resolved config and the command that made it), results.json (results.py),
train.log, trained.safetensors (the final weights) and checkpoints/ (checkpoint.py), plus a lock while a command
writes into it (run_lock.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

from .checkpoint import TRAINED_FILE
from .config import RunConfig
from .errors import UserError

CONFIG_FILE = "config.yaml"
CHECKPOINTS_DIR = "checkpoints"


class RunDirectoryError(UserError, RuntimeError):
    pass


def run_dir_of(cfg: RunConfig) -> Path:
    if cfg.output is None:
        raise RunDirectoryError(f"{cfg.source}: set output.dir (the run directory), e.g. output.dir=runs/my_run")
    return Path(cfg.output.dir)


def check_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Never lose a user's checkpoints or results silently: refuse a used directory unless told what to do."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirectoryError(f"output.dir {run_dir} is a file, not a directory; name a directory for the run")
    used = any((run_dir / name).exists() for name in ("results.json", CHECKPOINTS_DIR, TRAINED_FILE))
    if resume:
        if not (run_dir / CHECKPOINTS_DIR).is_dir():
            raise RunDirectoryError(f"--resume: {run_dir} holds no checkpoints to resume from")
    elif used and not overwrite:
        raise RunDirectoryError(
            f"{run_dir} already holds a run. Continue it with --resume, choose another output.dir, "
            "or pass output.overwrite=true to replace it."
        )


_RUN_LOG = "lora_ft-run-log"  # the name of the file handler a run adds, so that the next run can find and close it


def open_run_log(run_dir: Path, is_main: bool) -> None:
    """Send every lora_ft logger's records to <run_dir>/train.log (main process only), replacing a previous run's file
    handler: several runs trained in one process (a sweep, the tests) each get their own log."""
    package_logger = logging.getLogger("lora_ft")
    package_logger.setLevel(logging.INFO)
    close_run_log()
    if is_main:
        handler = logging.FileHandler(run_dir / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.set_name(_RUN_LOG)
        package_logger.addHandler(handler)


def close_run_log() -> None:
    package_logger = logging.getLogger("lora_ft")
    for handler in [h for h in package_logger.handlers if h.get_name() == _RUN_LOG]:
        package_logger.removeHandler(handler)
        handler.close()
