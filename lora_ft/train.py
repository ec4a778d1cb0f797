"""`lora-ft train`: the paper's training recipe with Hugging Face Accelerate.

One process on CPU or GPU, or many through `accelerate launch` (DDP). `training.batch_size` is the GLOBAL batch: each
step's batch is split over the processes, and the loss is normalised by the global number of completion tokens, so a
2-process run follows the same loss curve as a 1-process run of the same batch.

Run directory: config.yaml, results.json, train.log, trained.safetensors (last epoch), and
checkpoints/epoch-N/ (trained tensors, optimizer, scheduler, RNG; see checkpoint.py) from which `--resume` continues.
Faults: after a kill at any moment, `--resume` ends with what an uninterrupted run would have, and refuses a changed
model or recipe (resume.py); a non-finite loss, gradient or weight stops the run before it is saved (divergence.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
import signal
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from . import console
from .build import RANDOM_BASE_KEY, enable_gradient_checkpointing, parameter_report, preflight, random_base_fingerprint
from .build import seeded_adapted_model
from .checkpoint import TRAINED_FILE
from .config import RunConfig
from .config_checks import check_positions
from .data import CausalLMCollator, build_train_dataset, virtual_tokens_for
from .loss import completion_loss, completion_positions, loss_descriptions, loss_names, validation_loss
from .packing import packing_for
from .models.loading import load_tokenizer
from .run_dir import (
    CONFIG_FILE, check_run_dir, remove_final_shards, close_run_log, open_run_log, remove_own_files,
    resume_or_start, run_dir_of,
)
from .atomic import DiskFullError, check_writable, disk_full_error
from .run_lock import hold_run_lock
from .results import EpochRecord, ParameterCounts, RunResults, collect_environment, read_results, write_results, write_text_atomic
from .optim import build_optimizer, describe_optimizer, warmup_steps
from .memory import peak_memory_bytes
from .report.selection import search_record
from .tasks import get_task
from .trackers import resolve_trackers, start_trackers
from .divergence import NonFiniteWatch, TrainingDivergedError, diverged_advice, gradient_norm
from .resume import Progress, TrainingInterrupted, check_resume_config, continue_results, interrupted
from .stop_points import stop_point
from .stop_signals import StopRequest, stop_signals
from .cluster import StopAgreement
from .sharded import check_supported, fsdp_on_cpu, full_value
from .train_saving import Saving
from .schema import ConfigError

logger = logging.getLogger("lora_ft.train")


class Trainer(Saving):
    """setup -> run (epochs, validation, checkpoints) -> finish; one object per `lora-ft train` call."""

    def __init__(self, cfg: RunConfig, *, resume: bool | str = False, command: str | None = None,
                 stop: StopRequest | None = None):
        self.cfg = cfg
        self.run_dir = run_dir_of(cfg)
        self.resume, self.overwrite = resume, cfg.output.overwrite  # resume "auto": decided in _check_before_loading
        self.stop = stop or StopRequest()  # SIGTERM / SIGUSR1 / SIGINT (stop_signals.py): checked after every step
        self.command = command or "lora-ft train --config " + cfg.source
        check_writable(self.run_dir, "output.dir", "choose another output.dir, or make that folder writable")
        # One writer per run directory, taken before anything reads or writes it (main process only: run_lock.py).
        self.run_lock = hold_run_lock(self.run_dir, self.command)
        try:
            self._setup(cfg)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the run directory (idempotent); `train` calls it when the run ends, however it ends."""
        if self.run_lock is not None:
            self.run_lock.release()

    # -- setup: one phase a method, cheapest first ---------------------------------------------------------------------

    def _setup(self, cfg: RunConfig) -> None:
        self._check_before_loading(cfg)
        self._start_accelerator(cfg)
        set_seed(cfg.training.seed)  # before the method's init: A's draw is part of the seed's run
        self._build_model_and_data(cfg)
        self._build_optimizer(cfg)
        self._start_results(cfg)

    def _check_before_loading(self, cfg: RunConfig) -> None:
        """A bad config, data path, tracker or resume fails here, in well under a second, before any model loads."""
        if self.resume == "auto":  # continue the run if it has a checkpoint, else start it (again): run_dir.py
            self.resume, restart = resume_or_start(self.run_dir, cfg.to_dict())
            self.overwrite = self.overwrite or restart
        check_run_dir(self.run_dir, resume=self.resume, overwrite=self.overwrite)
        self.resume_changes = check_resume_config(self.run_dir / CONFIG_FILE, cfg.to_dict()) if self.resume else {}
        check_positions(cfg, preflight(cfg))  # also for hub and GGUF models, which `config validate` cannot read
        self.task = get_task(cfg.task)
        self.task.check_source(("train", "validation", cfg.decoding.split))
        self.task.check_split_roles(cfg.decoding.split)
        self.search = search_record(cfg.to_dict())  # training.selected_by: how a swept setting was chosen, checked
        self.log_with = resolve_trackers(cfg.training.report_to) or None  # a missing tracker package fails here

    def _start_accelerator(self, cfg: RunConfig) -> None:
        t = cfg.training
        # Without a GPU, Accelerate only forms a multi-process (gloo) group when told to use the CPU.
        distributed_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.accelerator = Accelerator(
            cpu=distributed_cpu,
            mixed_precision=t.mixed_precision,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            dataloader_config=DataLoaderConfiguration(split_batches=True, use_seedable_sampler=True),
            log_with=self.log_with,
            project_dir=str(self.run_dir),
        )
        fsdp_on_cpu(self.accelerator)  # an FSDP config on CPU processes: sharded as on GPUs (sharded.py)
        check_supported(self.accelerator)  # DeepSpeed and FSDP1: refused in one line
        for key, size in (("batch_size", t.batch_size), ("eval_batch_size", t.eval_batch_size)):
            if size % self.accelerator.num_processes:
                raise ConfigError(f"training.{key} {size} is the global batch and must divide evenly over "
                                  f"{self.accelerator.num_processes} processes")
        if self.accelerator.is_main_process:
            if not self.resume and self.run_dir.exists() and self.overwrite:
                remove_own_files(self.run_dir)  # the replaced run's checkpoints; a user's files stay (run_dir.py)
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.accelerator.wait_for_everyone()
        self.agreement = StopAgreement(self.accelerator)  # every process stops after the same step (cluster.py)
        open_run_log(self.run_dir, self.accelerator.is_main_process)

    def _build_model_and_data(self, cfg: RunConfig) -> None:
        t = cfg.training
        self.tokenizer = load_tokenizer(cfg.model)
        # Seeds torch again, to the value set_seed gave it (loading the tokenizer draws nothing): eval and export
        # rebuild the model through this same function, so a random_init base is the one trained here.
        adapted = seeded_adapted_model(cfg)
        self.model, self.method = adapted.model, adapted.method
        # What eval and export check their rebuilt random base against (results.json).
        self.random_base = random_base_fingerprint(self.model) if cfg.model.random_init else None
        if t.gradient_checkpointing:
            enable_gradient_checkpointing(self.model)
        self.packing = packing_for(self.model, t.packing)  # batches packed without padding where exact (packing.py)
        self.virtual = virtual_tokens_for(self.method, self.model)
        collate = CausalLMCollator(pad_token_id=self.tokenizer.pad_token_id)
        self.train_set = build_train_dataset(self.tokenizer, self.task, "train", self.virtual, cfg.task.max_length)
        valid_set = build_train_dataset(self.tokenizer, self.task, "validation", self.virtual, cfg.task.max_length)
        generator = torch.Generator().manual_seed(t.seed)
        self.train_loader = DataLoader(
            self.train_set, batch_size=t.batch_size, shuffle=True, collate_fn=collate,
            num_workers=t.num_workers, generator=generator, drop_last=False,
        )
        self.valid_loader = DataLoader(valid_set, batch_size=t.eval_batch_size, shuffle=False, collate_fn=collate)
        self.report = parameter_report(self.model)

    def _build_optimizer(self, cfg: RunConfig) -> None:
        """The optimizer (optim.py: the paper's AdamW by default), the linear schedule, and Accelerate's wrapping."""
        t = cfg.training
        params = [p for p in self.model.parameters() if p.requires_grad]
        # The paper's code applies weight decay to every trained tensor (A and B included), unlike HF Trainer's default.
        optimizer = build_optimizer(params, t)
        steps_per_epoch = math.ceil(len(self.train_loader) / t.gradient_accumulation_steps)
        self.total_steps = steps_per_epoch * t.epochs if t.max_steps is None else min(t.max_steps, steps_per_epoch * t.epochs)
        scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps(t, self.train_set), self.total_steps)
        (self.model, self.optimizer, self.train_loader, self.valid_loader, self.scheduler) = self.accelerator.prepare(
            self.model, optimizer, self.train_loader, self.valid_loader, scheduler
        )

    def _start_results(self, cfg: RunConfig) -> None:
        """A new run's results.json, or, on --resume, the run's own, continued from its newest intact checkpoint."""
        self.progress = Progress()
        self.last_checkpoint_step: int | None = None  # for the messages after Ctrl-C or divergence
        if self.resume:
            self._load_latest_checkpoint()
            self.last_checkpoint_step = self.progress.step
            self.results = read_results(self.run_dir)
            continue_results(self.results, self.progress, cfg.to_dict(), self.resume_changes)
        else:
            self.results = RunResults.start(self.run_dir.name, cfg.to_dict(), environment=collect_environment())
            self.results.parameters = ParameterCounts(**self.report)
        if self.random_base is not None:  # a resumed run keeps the fingerprint of the weights it started on
            self.results.extra.setdefault(RANDOM_BASE_KEY, self.random_base)
        self.results.extra.update(
            num_processes=self.accelerator.num_processes, device=str(self.accelerator.device), command=self.command,
            optimizer=describe_optimizer(cfg.training), batches=self.packing.describe(),
            losses=loss_descriptions(cfg.training.label_smoothing), **({"search": self.search} if self.search else {}),
            **self.method.results_record())  # a method's own record (peft: its resolved config and count)
        if self.log_with:  # a resumed run continues its W&B / MLflow run (trackers.py)
            resumed = self.results.extra.get("trackers") if self.resume else None
            self.results.extra["trackers"] = start_trackers(self.accelerator, self.run_dir.name, cfg.to_dict(), resumed)

    # -- loop --------------------------------------------------------------------------------------------------------

    def _training_step(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch; returns (loss sum, completion tokens) over all processes, as device tensors (no host sync for the
        loss; selecting the completion positions, loss.py, is the one per step)."""
        acc, t = self.accelerator, self.cfg.training
        with acc.accumulate(self.model):
            # packed without padding where exact (packing.py); the LM head and the loss on completion positions only
            # (loss.py): same numbers as the padded batch's full logits
            layout = self.packing(batch)
            with completion_positions(self.model, layout.labels) as (targets, _rows):
                outputs = self.model(**layout.inputs)
            loss_sum, tokens = completion_loss(outputs.logits, targets, t.label_smoothing)
            global_tokens = acc.gather(tokens.detach()).sum().clamp(min=1)
            # DDP averages gradients over processes: scaling by their number makes this the global token mean.
            acc.backward(loss_sum * acc.num_processes / global_tokens)
            grad_norm = None
            if acc.sync_gradients:
                if t.max_grad_norm is not None:
                    grad_norm = acc.clip_grad_norm_(self.model.parameters(), t.max_grad_norm)
                elif acc.scaler is None:
                    grad_norm = gradient_norm(self.model.parameters())
                grad_norm = None if grad_norm is None else full_value(grad_norm)  # FSDP: the norm over every shard
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
        total_loss = acc.gather(loss_sum.detach()).sum()
        # fp16's loss scaler skips the steps whose gradients overflowed: there an infinite norm is routine.
        self.watch.observe(self.progress.step + 1, total_loss, grad_norm if acc.scaler is None else None)
        return total_loss, global_tokens

    def validation_loss(self) -> float:
        return validation_loss(self.model, self.valid_loader, self.packing, self.accelerator)

    def run(self) -> Path:
        acc, t, p = self.accelerator, self.cfg.training, self.progress
        self._session_start, self._seconds_before = time.time(), p.train_seconds
        # Device-side sums since the last host sync (at most one per logging interval, checkpoint or epoch end).
        self.watch = NonFiniteWatch(acc.device)
        self._pending_loss = torch.zeros((), device=acc.device)
        self._pending_tokens = torch.zeros((), dtype=torch.long, device=acc.device)
        if acc.is_main_process:
            if not self.resume:  # output.overwrite: the replaced run's final weights must not pass for this run's
                (self.run_dir / TRAINED_FILE).unlink(missing_ok=True)
                remove_final_shards(self.run_dir)
            self._write_config()
            write_results(self.run_dir, self.results)
        logger.info("parameters: %d trainable of %d", self.report["trainable"], self.report["total"])
        logger.info("batches: %s", self.packing.describe())
        self.bar = tqdm(total=self.total_steps, initial=p.step, desc="train",
                        disable=not (acc.is_main_process and console.progress_bars()))
        self.model.train()
        # From here a first stop signal waits for the loop to look at it (after a step, or an epoch's end) and to
        # write a checkpoint; during the final save it is ignored: the run is complete a moment later.
        with self.stop.deferring():
            try:
                while p.epoch < t.epochs:
                    if p.step >= self.total_steps and not p.batches_in_epoch:
                        break  # training.max_steps reached at an epoch's end
                    epoch = p.epoch + 1
                    # Resumed from a checkpoint at its epoch's last step (or at max_steps): only the epoch's end is left.
                    if p.step < self.total_steps and p.batches_in_epoch < len(self.train_loader):
                        self._train_epoch(epoch)
                    self._end_epoch(epoch)
                    self._stop_if_asked()
            finally:
                self.bar.close()  # ends the bar's line: an error message after it starts on a line of its own
            return self.finish(time.time() - self._session_start)

    def _train_epoch(self, epoch: int) -> None:
        acc, p = self.accelerator, self.progress
        self.train_loader.set_epoch(epoch)  # data order is a function of (seed, epoch): resumable
        loader = self.train_loader
        if p.batches_in_epoch:
            loader = acc.skip_first_batches(loader, p.batches_in_epoch)
        window_tokens = torch.zeros((), dtype=torch.long, device=acc.device)  # this process's, for tokens/s
        window_start = time.time()
        self._train_batches(loader, window_tokens, window_start)
        self._stop_if_asked()  # a signal during the epoch's last batch fetch: stop before the validation pass

    def _train_batches(self, loader, window_tokens: torch.Tensor, window_start: float) -> None:
        acc, t, p = self.accelerator, self.cfg.training, self.progress
        for batch in loader:
            loss_sum, tokens = self._training_step(batch)
            self._pending_loss += loss_sum
            self._pending_tokens += tokens
            window_tokens += batch["attention_mask"].sum()
            p.batches_in_epoch += 1
            if not acc.sync_gradients:
                continue
            p.step += 1
            self.bar.update(1)
            stop_point("after-step", p.step)
            if p.step % t.log_every_steps == 0 or p.step == 1:
                self._sync()
                loss, lr = float(loss_sum / tokens), self.scheduler.get_last_lr()[0]
                rate = int(acc.gather(window_tokens).sum()) / max(time.time() - window_start, 1e-9)
                self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{rate:.0f}")
                logger.info("step %d %s %.4f lr %.3e tokens/s %.0f", p.step, loss_names(t.label_smoothing)[0], loss, lr, rate)
                acc.log({"train/loss": loss, "train/lr": lr, "train/tokens_per_s": rate}, step=p.step)
                window_tokens.zero_()
                window_start = time.time()
            if t.checkpoint_every_steps and p.step % t.checkpoint_every_steps == 0:
                self._checkpoint(f"step-{p.step}")
                stop_point("after-step-checkpoint", p.step)
            self._stop_if_asked()  # after the step and its scheduled checkpoint
            if p.step >= self.total_steps:
                break

    def _end_epoch(self, epoch: int) -> None:
        """Validation, the epoch's record (into Progress first, so the epoch checkpoint carries it), its checkpoint,
        then results.json."""
        acc, p = self.accelerator, self.progress
        self._sync()
        train_loss = p.epoch_loss_sum / max(p.epoch_tokens, 1)
        p.epoch, p.batches_in_epoch, p.epoch_loss_sum, p.epoch_tokens = epoch, 0, 0.0, 0
        val = self.validation_loss()
        if not math.isfinite(val):  # finite but huge weights can overflow the forward pass
            raise TrainingDivergedError(
                f"training diverged: the validation loss after epoch {epoch} (step {p.step}) was not finite (NaN or inf); "
                f"its weights were not saved as the epoch's checkpoint. {diverged_advice(self.cfg.training.learning_rate)}"
            )
        record = EpochRecord(
            epoch=epoch, step=p.step, train_loss=train_loss, validation_loss=val,
            learning_rate=self.scheduler.get_last_lr()[0], wall_time_s=self._elapsed(),
        )
        p.epoch_records.append(dataclasses.asdict(record))
        train_name, validation_name = loss_names(self.cfg.training.label_smoothing)
        logger.info("epoch %d: %s %.4f, %s %.4f", epoch, train_name, record.train_loss, validation_name, val)
        acc.log({"valid/loss": val}, step=p.step)
        self._checkpoint(f"epoch-{epoch}")
        stop_point("after-epoch-checkpoint", epoch)
        if acc.is_main_process:
            self.results.add_epoch(record)
            write_results(self.run_dir, self.results)
        stop_point("after-epoch-results", epoch)

    def _elapsed(self) -> float:
        """Training time of this run so far, the attempts before a resume included (up to their checkpoint)."""
        return self._seconds_before + time.time() - self._session_start

    def _sync(self) -> None:
        """The loop's host sync: stop if any step since the last one was not finite, then fold the device-side loss
        sums into Progress (a float64 on the host, so a long epoch's sum loses no precision)."""
        self.watch.raise_if_diverged(self.progress.step, self.last_checkpoint_step, self.cfg.training.learning_rate)
        self.progress.epoch_loss_sum += float(self._pending_loss)
        self.progress.epoch_tokens += int(self._pending_tokens)
        self._pending_loss.zero_()
        self._pending_tokens.zero_()

    def finish(self, seconds: float) -> Path:
        acc = self.accelerator
        self._sync()
        self._weights_finite()
        acc.wait_for_everyone()
        weights = self._save_final_weights()
        if acc.is_main_process:
            stop_point("after-final-weights")
            self.results.status = "trained"
            self.results.wall_time_s = (self.results.wall_time_s or 0.0) + seconds
            peak = peak_memory_bytes(acc.device)
            self.results.peak_memory_bytes = max(peak, self.results.peak_memory_bytes or 0)
            write_results(self.run_dir, self.results)
            logger.info("trained in %.1f s; weights in %s", seconds, weights)
        acc.end_training()
        return self.run_dir

    def _write_config(self) -> None:
        header = f"# Resolved config of this run. Re-run with:\n#   {self.command}\n"
        write_text_atomic(self.run_dir / CONFIG_FILE, header + self.cfg.to_yaml(), overwrite=True)


def train(cfg: RunConfig, *, resume: bool | str = False, command: str | None = None, signals=None) -> Path:
    """Train one run; on failure results.json says why (status 'failed') and the error propagates. `resume`: True
    continues the run from its newest intact checkpoint, "auto" does so if it has one and starts it otherwise.

    A stop signal (`signals`, default SIGTERM, SIGUSR1, SIGINT) becomes TrainingInterrupted once the step is done and
    a checkpoint written: results.json says status 'interrupted' with the step reached, the run lock is released, and
    the CLI prints one line with the resume command and exits with 128 + the signal's number (143, 138, 130); see
    stop_signals.py."""
    command = command or " ".join(["lora-ft", *sys.argv[1:]])
    command = re.sub(r" --resume( auto)?(?= |$)", "", command)  # the messages add it where it applies
    trainer = None
    with stop_signals(signals) as stop:
        try:
            trainer = Trainer(cfg, resume=resume, command=command, stop=stop)
            return trainer.run()
        except BaseException as exc:
            error = exc
            if isinstance(exc, KeyboardInterrupt):  # a signal (stop_signals.Interrupted) or a bare Ctrl-C
                signum = getattr(exc, "signum", signal.SIGINT)
                error = interrupted(command, resume, signum=signum) if trainer is None else interrupted(
                    command, resume, trainer.progress, trainer.total_steps, trainer.last_checkpoint_step, signum=signum
                )
            elif trainer is not None:
                # A full disk (checkpoints, weights) is the user's to fix: one line, not torch's C++ message.
                error = disk_full_error(trainer.run_dir, exc) or exc
            if trainer is not None and trainer.accelerator.is_main_process:
                if isinstance(error, TrainingInterrupted):
                    trainer.results.mark_interrupted(error, step=trainer.progress.step, signal=error.signal,
                                                     checkpoint=trainer.last_checkpoint_step == trainer.progress.step)
                else:
                    trainer.results.mark_failed(error)
                with contextlib.suppress(DiskFullError):  # on a full disk, the failure cannot be recorded either
                    write_results(trainer.run_dir, trainer.results)
            if error is not exc:
                raise error from None
            raise
        finally:
            if trainer is not None:
                trainer.close()
            close_run_log()
