"""The run directory: its file names, the checks that keep a user's runs from being lost, and its train.log.

A run directory holds config.yaml (the resolved config and the command that made it), results.json (results.py),
train.log, trained.safetensors (the final weights; for full fine-tuning under FSDP, trained-sharded/ instead) and
checkpoints/ (checkpoint.py; under FSDP with model/ and optimizer/ shard folders), plus a lock while a command writes
into it (run_lock.py).

lora-ft replaces or removes only files it can tell it wrote, so nothing a user keeps in a run directory is lost:
a results.json that reads as lora-ft's (its schema), a config.yaml with lora-ft's header line (or beside such a
results.json), a trained.safetensors with lora-ft's metadata, and under checkpoints/ the files of lora-ft's names in
folders of lora-ft's checkpoint names. A folder holding another results.json, config.yaml or trained.safetensors is
refused (one line), and so is, with output.overwrite=true, a checkpoint folder holding another file (writing a
checkpoint of that name would replace it). Anything else (checkpoints/mine.txt, notes.md) is left alone.
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

from safetensors import SafetensorError, safe_open

from .checkpoint import TRAINED_FILE
from .sharded import FINAL_DIR, MODEL_DIR, OPTIMIZER_DIR, SHARD_FILE
from .config import RunConfig
from .errors import UserError
from .results import RESULTS_FILENAME, ResultsError, read_results

CONFIG_FILE = "config.yaml"
CHECKPOINTS_DIR = "checkpoints"
# The first line of every config.yaml lora-ft writes (train.py, evaluate.py).
CONFIG_HEADERS = ("# Resolved config of this run.", "# lora-ft eval --config")
# checkpoint.py's folder names (a complete one, one being written, one being replaced) and the files it writes in them
# (training_state.pt: an older lora-ft's; `.<name>.<pid>.<hex>.tmp`: atomic.py's temporary files).
_CHECKPOINT_DIR = re.compile(r"(epoch|step)-\d+|\.partial-.+|\.replaced-.+")
_CHECKPOINT_FILE = re.compile(
    r"trained\.safetensors|(optimizer|scheduler|scaler|rng-\d+)\.(safetensors|json)|progress\.json|manifest\.json"
    r"|training_state\.pt|\..+\.\d+\.[0-9a-f]{8}\.tmp"
)
_SHARD_FOLDERS = (MODEL_DIR, OPTIMIZER_DIR)  # sharded.py: every process's shard files


logger = logging.getLogger("lora_ft.run_dir")


class RunDirectoryError(UserError, RuntimeError):
    pass


def run_dir_of(cfg: RunConfig) -> Path:
    if cfg.output is None:
        raise RunDirectoryError(f"{cfg.source}: set output.dir (the run directory), e.g. output.dir=runs/my_run")
    return Path(cfg.output.dir)


def check_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Never lose a user's checkpoints or results silently: refuse a used directory unless told what to do, and a
    file lora-ft did not write wherever the run would replace it."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirectoryError(f"output.dir {run_dir} is a file, not a directory; name a directory for the run")
    if not resume:
        refuse_foreign_files(run_dir)
        if overwrite:
            own_checkpoint_files(run_dir / CHECKPOINTS_DIR)  # refuses a checkpoint folder holding a user's file
    used = any((run_dir / name).exists() for name in (RESULTS_FILENAME, CHECKPOINTS_DIR, TRAINED_FILE, FINAL_DIR))
    if resume:
        if not (run_dir / CHECKPOINTS_DIR).is_dir():
            raise RunDirectoryError(f"--resume: {run_dir} holds no checkpoints to resume from")
    elif used and not overwrite:
        raise RunDirectoryError(
            f"{run_dir} already holds a run. Continue it with --resume, choose another output.dir, "
            "or pass output.overwrite=true to replace it."
        )


def resume_or_start(run_dir: Path, config: dict) -> tuple[bool, bool]:
    """`train --resume auto`, the one command of a job script that is requeued: (resume, start again).

    - a checkpoint under checkpoints/ (one with a manifest; verified when it is loaded): continue the run (resume);
    - no run there yet: start it;
    - this run (same config, status training, interrupted or failed), stopped before its first checkpoint: start it
      again, replacing only lora-ft's files as output.overwrite=true does (there was nothing to continue);
    - anything else (a finished run without checkpoints, another config, an unreadable results.json): one-line error,
      nothing touched."""
    from .resume import check_resume_config

    root = run_dir / CHECKPOINTS_DIR
    if root.is_dir() and any(d.is_dir() and (d / "manifest.json").is_file() for d in root.iterdir()):
        return True, False
    if not any((run_dir / name).exists() for name in (RESULTS_FILENAME, CONFIG_FILE, TRAINED_FILE)):
        return False, False
    status = None
    if (run_dir / RESULTS_FILENAME).exists():
        try:
            status = read_results(run_dir).status
        except ResultsError as exc:
            raise RunDirectoryError(f"--resume auto: {exc}") from None
    if status not in (None, "training", "interrupted", "failed"):
        raise RunDirectoryError(
            f"--resume auto: {run_dir} holds a {status} run without checkpoints, so there is nothing to continue; "
            "choose another output.dir, or pass output.overwrite=true to train it again"
        )
    if (run_dir / CONFIG_FILE).is_file():
        check_resume_config(run_dir / CONFIG_FILE, config)  # another run's directory: refused, listing the changes
    logger.warning("--resume auto: %s stopped before its first checkpoint; starting it again", run_dir)
    return False, True


def folder_contents(run_dir: Path) -> str:
    """What a used run directory holds, for a refusal that must not guess: "a lora-ft run (status trained)", or
    "no lora-ft run (no readable results.json) but notes.txt, data"."""
    from .run_lock import LOCK_FILENAME

    try:
        return f"a lora-ft run (status {read_results(run_dir).status})"
    except ResultsError:
        pass
    names = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILENAME)
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"no lora-ft run (no readable {RESULTS_FILENAME}) but {shown}"


def _not_ours(path: Path, why: str) -> RunDirectoryError:
    return RunDirectoryError(
        f"{path} was not written by lora-ft ({why}); lora-ft never replaces a file it did not write: choose another "
        f"output.dir, or move {path.name} out of {path.parent}"
    )


def refuse_foreign_files(run_dir: Path) -> None:
    """RunDirectoryError (one line) if run_dir holds a results.json, config.yaml or trained.safetensors that lora-ft did
    not write: a new run, or output.overwrite=true, would replace it."""
    results = run_dir / RESULTS_FILENAME
    if results.exists():
        try:
            read_results(run_dir)
        except ResultsError as exc:
            raise _not_ours(results, str(exc).removeprefix(f"{results}: ")) from None
    config = run_dir / CONFIG_FILE
    if config.exists() and not results.exists():  # beside lora-ft's results.json, it is that run's config
        try:
            with open(config, "rb") as handle:
                first_line = handle.read(256).decode("utf-8", errors="replace")
        except OSError as exc:
            raise _not_ours(config, f"unreadable: {exc.strerror}") from None
        if not first_line.startswith(CONFIG_HEADERS):
            raise _not_ours(config, f"it does not start with lora-ft's header, {CONFIG_HEADERS[0]!r}")
    trained = run_dir / TRAINED_FILE
    if trained.exists():
        try:
            with safe_open(str(trained), framework="pt") as f:
                ours = (f.metadata() or {}).get("format") == "lora-ft/1"
        except (SafetensorError, OSError):
            ours = False
        if not ours:
            raise _not_ours(trained, "it holds no lora-ft metadata")


def own_checkpoint_files(root: Path) -> list[Path]:
    """The files lora-ft wrote under root (a run's checkpoints/): its file names in folders of its checkpoint names
    (and shard files in their model/ and optimizer/ folders). RunDirectoryError if such a folder holds anything else:
    the run would replace that folder with its checkpoint."""
    own: list[Path] = []
    folders = [d for d in sorted(root.iterdir()) if d.is_dir() and _CHECKPOINT_DIR.fullmatch(d.name)] if root.is_dir() else []
    for folder in folders:
        own.extend(_own_files(folder, f"output.overwrite=true replaces {folder}"))
    return own


def _own_files(folder: Path, why: str) -> list[Path]:
    own = []
    for path in sorted(folder.iterdir()):
        if path.is_dir() and path.name in _SHARD_FOLDERS:
            for shard in sorted(path.iterdir()):
                if not (shard.is_file() and SHARD_FILE.fullmatch(shard.name)):
                    raise _not_ours(shard, f"it is not a checkpoint file, and {why}")
                own.append(shard)
        elif path.is_file() and _CHECKPOINT_FILE.fullmatch(path.name):
            own.append(path)
        else:
            raise _not_ours(path, f"it is not a checkpoint file, and {why}")
    return own


def remove_final_shards(run_dir: Path) -> None:
    """Remove an FT run's sharded final weights (trained-sharded/: lora-ft's files only, then the folders if empty)."""
    folder = run_dir / FINAL_DIR
    if not folder.is_dir():
        return
    for path in _own_files(folder, f"a new run replaces {folder}"):
        path.unlink()
    for sub in (*(folder / name for name in _SHARD_FOLDERS), folder):
        with contextlib.suppress(OSError):
            sub.rmdir()


def remove_own_files(run_dir: Path) -> None:
    """output.overwrite=true: remove the replaced run's checkpoints, file by file (only what lora-ft wrote) and the
    folders that leaves empty; whatever else is in the run directory stays. (Its results.json, config.yaml and
    trained.safetensors are lora-ft's, checked by check_run_dir, and replaced by the new run.)"""
    root = run_dir / CHECKPOINTS_DIR
    for path in own_checkpoint_files(root):
        path.unlink()
    for folder in [d for d in root.iterdir() if d.is_dir() and _CHECKPOINT_DIR.fullmatch(d.name)] if root.is_dir() else []:
        for sub in (*(folder / name for name in _SHARD_FOLDERS), folder):
            with contextlib.suppress(OSError):
                sub.rmdir()
    remove_final_shards(run_dir)
    with contextlib.suppress(OSError):  # only if nothing of the user's is left in it
        root.rmdir()


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
