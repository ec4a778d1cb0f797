"""What `--resume` needs: where a run stands (`Progress`, saved in every checkpoint), the check that it continues with
the config it was started with, its results.json when it continues, and the message that says how to continue it.

A kill at any moment loses only the steps since the last checkpoint: Progress carries the current epoch's running loss
and the finished epochs' records, so a resumed run ends with the records, checkpoints and per-epoch losses of an
uninterrupted one, even when the kill fell between an epoch's checkpoint and results.json.

The run's own config is its config.yaml (the resolved config written when it started). A resume compares it key by key
with the config it is given. Keys in `HARMLESS_ON_RESUME` change neither the model nor the training recipe (how often
to log or checkpoint, batch sizes of passes that only measure, where the run directory is now) and may differ; the
changes are recorded in results.json (extra["resume_changes"]). Anything else that differs is an error listing every
difference, raised before any model loads: training the rest of a run at another alpha, rank or learning rate would
give weights that belong to no config.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .results import EpochRecord, RunResults, compute_best_epoch


@dataclass
class Progress:
    """Where a run stands, saved as JSON in every checkpoint; `--resume` continues from exactly here."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    batches_in_epoch: int = 0  # batches of the current epoch already consumed (step checkpoints)
    epoch_loss_sum: float = 0.0  # training-loss sum over the completion tokens of those batches
    epoch_tokens: int = 0  # their completion tokens: the epoch's train_loss is epoch_loss_sum / epoch_tokens
    train_seconds: float = 0.0  # time spent training up to this point (the epoch records' wall_time_s)
    epoch_records: list[dict] = field(default_factory=list)  # the finished epochs' EpochRecords, as dicts


HARMLESS_ON_RESUME: dict[str, str] = {
    "training.log_every_steps": "logging only",
    "training.eval_batch_size": "the validation loss sums per-example losses: it changes by rounding only",
    "training.checkpoint_every_steps": "which step checkpoints are written, not what is trained",
    "training.num_workers": "the data order comes from the seeded sampler, not from the workers",
    "training.packing": "packed batches give the padded ones' loss and gradients up to rounding (dropout masks in "
                        "another layout, same distribution)",
    "training.gradient_checkpointing": "recomputing activations changes memory and speed, not the numbers",
    "decoding.batch_size": "padded positions are masked, so batching prompts changes the speed only",
    "output.dir": "the run directory may have been moved or renamed",
    "output.overwrite": "not used by a resume",
    "output.keep_checkpoints": "how many old epoch checkpoints are kept",
}
HARMLESS_SECTIONS = ("sweep",)  # how a sweep made this run; the run's own values are in the other sections


class ResumeConfigError(UserError):
    """The config given to --resume changes the model or the recipe of the run it would continue."""


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"training": {"epochs": 5}} -> {"training.epochs": 5}; lists and {} stay values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old value, new value)} for every key whose value differs (missing = None)."""
    old_flat, new_flat = flatten(old), flatten(new)
    return {
        key: (old_flat.get(key), new_flat.get(key))
        for key in sorted(set(old_flat) | set(new_flat))
        if old_flat.get(key) != new_flat.get(key)
    }


def is_harmless(key: str) -> bool:
    return key in HARMLESS_ON_RESUME or key.split(".")[0] in HARMLESS_SECTIONS


def check_resume_config(config_file: Path, given: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The harmless changes between the run's config (its `config_file`) and the one given to --resume;
    ResumeConfigError, listing them all, if any other key differs."""
    from .config import load_config

    run_dir = config_file.parent
    if not config_file.is_file():
        raise ResumeConfigError(f"--resume: {run_dir} has no {config_file.name}, so its config cannot be checked")
    changes = config_changes(load_config(config_file).to_dict(), given)
    refused = {key: change for key, change in changes.items() if not is_harmless(key)}
    if refused:
        listed = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in refused.items())
        raise ResumeConfigError(
            f"--resume: {run_dir} was trained with a different config ({listed}); these change the model or the "
            f"training recipe. Resume with the run's own config (lora-ft train --config {config_file} "
            "--resume), or train the new config into another output.dir"
        )
    return {key: change for key, change in changes.items() if is_harmless(key)}


def continue_results(results: RunResults, progress: Progress, config: dict[str, Any], changes: dict) -> None:
    """results.json of a resumed run: its epochs are those of the checkpoint (a kill after an epoch's checkpoint but
    before results.json recorded it loses nothing), the interrupted attempt's error goes, harmless changes are recorded."""
    records = [EpochRecord(**r) for r in progress.epoch_records]
    if not records:  # a checkpoint written before Progress carried the records
        records = [e for e in results.epochs if e.epoch <= progress.epoch]
    results.epochs, results.best_epoch = records, compute_best_epoch(records)
    results.status, results.error = "training", None
    results.extra.pop("interrupted", None)  # the interrupted attempt's record goes with its error
    if changes:
        results.config = config
        listed = {key: [old, new] for key, (old, new) in changes.items()}
        results.extra.setdefault("resume_changes", []).append({"step": progress.step, "changes": listed})


class TrainingInterrupted(UserError):
    """A stop signal (SIGTERM, SIGUSR1, Ctrl-C's SIGINT): the message says where the run stopped and the command that
    continues it; the exit code is 128 + the signal's number (143, 138, 130), as shells and schedulers report a process
    a signal ended. Under `accelerate launch` only the main process prints it (every process stops at the same step)."""

    main_process_only = True

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signal = signal.Signals(signum).name
        self.exit_code = 128 + int(signum)


def interrupted(command: str, resume: bool | str, progress: Progress | None = None, total_steps: int = 0,
                last_checkpoint_step: int | None = None, *, signum: int = signal.SIGINT) -> TrainingInterrupted:
    """The one-line error after a signal: where the run stopped and the command that continues it (`resume`: how this
    run was started; with "auto" the same command continues it)."""
    by = "" if signum == signal.SIGINT else f" by {signal.Signals(signum).name}"  # Ctrl-C: the user knows
    again = f"{command} --resume auto" if resume == "auto" else None
    if progress is None:
        return TrainingInterrupted(
            f"interrupted{by} before training started; run again with: {again or command + (' --resume' if resume else '')}",
            signum,
        )
    if last_checkpoint_step is None:
        return TrainingInterrupted(
            f"interrupted at step {progress.step} of {total_steps}{by}, before the first checkpoint (nothing to resume); "
            f"start again with: {again or command + ' output.overwrite=true'}", signum,
        )
    if last_checkpoint_step == progress.step:
        return TrainingInterrupted(
            f"stopped{by} at step {progress.step} of {total_steps}, checkpoint at that step written; resume with: "
            f"{again or command + ' --resume'}", signum,
        )
    return TrainingInterrupted(
        f"interrupted at step {progress.step} of {total_steps}{by} (last checkpoint: step {last_checkpoint_step}); "
        f"resume with: {again or command + ' --resume'}", signum,
    )
