"""What a training run saves and restores: its checkpoints, its final weights, and the stop a signal asks for.

A mixin of `train.Trainer` (kept apart so that train.py holds the loop). One-process and DDP runs save as checkpoint.py
describes; under FSDP every process saves its own shards (sharded.py), and the final weights are gathered for the small
methods (a LoRA is megabytes) and stay sharded for full fine-tuning (`trained-sharded/`, which `lora-ft export`
consolidates into one safetensors model).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import torch

from .checkpoint import (
    TRAINED_FILE, checkpoint_dirs, resume_latest, save_trained, write_checkpoint, write_final_sharded,
)
from .divergence import check_trained_weights_finite
from .resume import Progress
from .run_dir import CHECKPOINTS_DIR, RunDirectoryError
from .sharded import SHARDED_FINAL_METHODS, gathered_trainable, is_sharded

logger = logging.getLogger("lora_ft.train")


class Saving:
    """Checkpoints, final weights and signal stops of a Trainer (which provides accelerator, model, method, optimizer,
    scheduler, progress, cfg, run_dir, stop, agreement, last_checkpoint_step and _sync/_elapsed)."""

    def _all_agree(self, ok: bool) -> bool:
        """True in every process if `ok` is true in every process (sharded runs check their own shards)."""
        if not is_sharded(self.accelerator) or self.accelerator.num_processes == 1:
            return ok
        flag = torch.tensor([int(ok)], device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() == self.accelerator.num_processes)

    def _weights_finite(self) -> None:
        check_trained_weights_finite(self.model, self.progress.step, self.cfg.training.learning_rate,
                                     agree=self._all_agree)

    def _checkpoint_dirs(self) -> list[Path]:
        return checkpoint_dirs(self.run_dir / CHECKPOINTS_DIR)

    def save_checkpoint(self, name: str) -> None:
        acc = self.accelerator
        write_checkpoint(
            acc, self.run_dir / CHECKPOINTS_DIR, name, model=self.model, method=self.method, optimizer=self.optimizer,
            scheduler=self.scheduler, progress=dataclasses.asdict(self.progress), scaler=acc.scaler,
        )
        if acc.is_main_process:
            keep = self.cfg.output.keep_checkpoints
            epoch_dirs = [d for d in self._checkpoint_dirs() if d.name.startswith("epoch-")]
            for old in epoch_dirs[:-keep] if keep else []:
                shutil.rmtree(old)
        acc.wait_for_everyone()

    def _load_latest_checkpoint(self) -> None:
        """Continue from the newest checkpoint whose files match its manifest; each skipped one is a warning."""
        root = self.run_dir / CHECKPOINTS_DIR
        latest, progress, skipped = resume_latest(root, self.accelerator, model=self.model, optimizer=self.optimizer,
                                                  scheduler=self.scheduler, scaler=self.accelerator.scaler)
        if latest is None:
            why = f": skipped {'; '.join(skipped[:3])}" if skipped else ""
            more = f" and {len(skipped) - 3} more (see the warnings above)" if len(skipped) > 3 else ""
            raise RunDirectoryError(f"--resume: no intact checkpoint under {root}{why}{more}")
        self.progress = Progress(**progress)
        logger.info("resumed from %s (epoch %d, step %d)", latest, self.progress.epoch, self.progress.step)

    def _checkpoint(self, name: str) -> None:
        """Save a checkpoint, after confirming that every step since the last check and the weights are finite."""
        self._sync()
        self._weights_finite()
        self.progress.train_seconds = self._elapsed()
        self.save_checkpoint(name)
        self.last_checkpoint_step = self.progress.step

    def _stop_if_asked(self) -> None:
        """If a process got a stop signal (all processes agree, after the same step): write a checkpoint at this step
        (unless the run just wrote one) and stop with Interrupted."""
        signum = self.agreement.agreed(self.stop.signum)
        if signum is None:
            return
        if self.last_checkpoint_step != self.progress.step:
            self._checkpoint(f"step-{self.progress.step}")
        self.stop.stop(signum)

    def _save_final_weights(self) -> Path:
        """trained.safetensors (from every process's shards, gathered, under FSDP), or, for full fine-tuning under
        FSDP, trained-sharded/. Returns what was written."""
        acc = self.accelerator
        model = acc.unwrap_model(self.model)
        if is_sharded(acc) and self.method.name in SHARDED_FINAL_METHODS:
            final = write_final_sharded(acc, self.run_dir, model, self.method)
            if acc.is_main_process:  # an earlier run's one-file weights must not pass for this run's
                (self.run_dir / TRAINED_FILE).unlink(missing_ok=True)
            return final
        tensors = gathered_trainable(model) if is_sharded(acc) else None  # a collective: every process
        if acc.is_main_process:
            save_trained(model, self.method, self.run_dir, tensors)
        return self.run_dir / TRAINED_FILE
