"""`lora-ft train`: the paper's training recipe with Hugging Face Accelerate.

One process on CPU or GPU, or many through `accelerate launch` (DDP). `training.batch_size` is the GLOBAL batch: each
step's batch is split over the processes, and the loss is normalised by the global number of completion tokens, so a
2-process run follows the same loss curve as a 1-process run of the same batch.

Run directory: config.yaml, results.json, train.log, trained.safetensors (last epoch), and
checkpoints/epoch-N/ (trained tensors, optimizer, scheduler, RNG) from which `--resume` continues.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from .build import adapted_model, parameter_report, preflight
from .checkpoint import TRAINED_FILE, load_trained, save_trained
from .config import RunConfig
from .data import CausalLMCollator, VirtualTokens, build_train_dataset
from .loss import completion_loss, completion_loss_per_example, completion_positions
from .models.loading import load_tokenizer
from .results import EpochRecord, ParameterCounts, RunResults, collect_environment, read_results, write_json_atomic, write_results, write_text_atomic
from .tasks import get_task
from .errors import UserError

logger = logging.getLogger("lora_ft.train")

CONFIG_FILE = "config.yaml"
CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "training_state.pt"
PROGRESS_FILE = "progress.json"  # small, so finding the latest checkpoint reads no optimizer state


class RunDirectoryError(UserError, RuntimeError):
    pass


def run_dir_of(cfg: RunConfig) -> Path:
    if cfg.output is None:
        raise RunDirectoryError(f"{cfg.source}: set output.dir (the run directory), e.g. output.dir=runs/my_run")
    return Path(cfg.output.dir)


def check_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Never lose a user's checkpoints or results silently: refuse a used directory unless told what to do."""
    used = any((run_dir / name).exists() for name in ("results.json", CHECKPOINTS_DIR, TRAINED_FILE))
    if resume:
        if not (run_dir / CHECKPOINTS_DIR).is_dir():
            raise RunDirectoryError(f"--resume: {run_dir} holds no checkpoints to resume from")
    elif used and not overwrite:
        raise RunDirectoryError(
            f"{run_dir} already holds a run. Continue it with --resume, choose another output.dir, "
            "or pass output.overwrite=true to replace it."
        )


def virtual_tokens_for(method, model) -> VirtualTokens:
    prefix, infix = method.virtual_token_counts()
    vocab = model.config.vocab_size
    return VirtualTokens(
        prefix_ids=tuple(range(vocab, vocab + prefix)), infix_ids=tuple(range(vocab + prefix, vocab + prefix + infix))
    )


@dataclass
class Progress:
    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    batches_in_epoch: int = 0  # batches of the current epoch already consumed (step checkpoints)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


_RUN_LOG = "lora_ft-run-log"  # the name of the file handler a run adds, so that the next run can find and close it


def _open_run_log(run_dir: Path, is_main: bool) -> None:
    """Send every lora_ft logger's records to <run_dir>/train.log (main process only), replacing a previous run's file
    handler: several runs trained in one process (a sweep, the tests) each get their own log."""
    package_logger = logging.getLogger("lora_ft")
    package_logger.setLevel(logging.INFO)
    _close_run_log()
    if is_main:
        handler = logging.FileHandler(run_dir / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.set_name(_RUN_LOG)
        package_logger.addHandler(handler)


def _close_run_log() -> None:
    package_logger = logging.getLogger("lora_ft")
    for handler in [h for h in package_logger.handlers if h.get_name() == _RUN_LOG]:
        package_logger.removeHandler(handler)
        handler.close()


class Trainer:
    """setup -> run (epochs, validation, checkpoints) -> finish; one object per `lora-ft train` call."""

    def __init__(self, cfg: RunConfig, *, resume: bool = False, command: str | None = None):
        self.cfg = cfg
        self.run_dir = run_dir_of(cfg)
        self.resume = resume
        self.command = command or "lora-ft train --config " + cfg.source
        t = cfg.training
        # Cheap checks first: a bad config or data path fails before any model loads.
        check_run_dir(self.run_dir, resume=resume, overwrite=cfg.output.overwrite)
        preflight(cfg)
        self.task = get_task(cfg.task)
        self.task.check_source(("train", "validation"))

        log_with = "tensorboard" if _has_tensorboard() else None
        # Without a GPU, Accelerate only forms a multi-process (gloo) group when told to use the CPU.
        distributed_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.accelerator = Accelerator(
            cpu=distributed_cpu,
            mixed_precision=t.mixed_precision,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            dataloader_config=DataLoaderConfiguration(split_batches=True, use_seedable_sampler=True),
            log_with=log_with,
            project_dir=str(self.run_dir),
        )
        if t.batch_size % self.accelerator.num_processes:
            raise ValueError(
                f"training.batch_size {t.batch_size} is the global batch and must divide evenly over "
                f"{self.accelerator.num_processes} processes"
            )
        if self.accelerator.is_main_process:
            if not resume and self.run_dir.exists() and cfg.output.overwrite:
                shutil.rmtree(self.run_dir / CHECKPOINTS_DIR, ignore_errors=True)
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.accelerator.wait_for_everyone()
        _open_run_log(self.run_dir, self.accelerator.is_main_process)
        set_seed(t.seed)  # before the method's init: A's draw is part of the seed's run

        self.tokenizer = load_tokenizer(cfg.model)
        adapted = adapted_model(cfg)
        self.model, self.method = adapted.model, adapted.method
        self.virtual = virtual_tokens_for(self.method, self.model)
        collate = CausalLMCollator(pad_token_id=self.tokenizer.pad_token_id)
        train_set = build_train_dataset(self.tokenizer, self.task, "train", self.virtual, cfg.task.max_length)
        valid_set = build_train_dataset(self.tokenizer, self.task, "validation", self.virtual, cfg.task.max_length)
        generator = torch.Generator().manual_seed(t.seed)
        train_loader = DataLoader(
            train_set, batch_size=t.batch_size, shuffle=True, collate_fn=collate,
            num_workers=t.num_workers, generator=generator, drop_last=False,
        )
        valid_loader = DataLoader(valid_set, batch_size=t.eval_batch_size, shuffle=False, collate_fn=collate)

        params = [p for p in self.model.parameters() if p.requires_grad]
        # The paper's code applies weight decay to every trained tensor (A and B included), unlike HF Trainer's default.
        optimizer = torch.optim.AdamW(
            params, lr=t.learning_rate, betas=tuple(t.adam_betas), eps=t.adam_epsilon, weight_decay=t.weight_decay
        )
        steps_per_epoch = math.ceil(len(train_loader) / t.gradient_accumulation_steps)
        self.total_steps = steps_per_epoch * t.epochs if t.max_steps is None else min(t.max_steps, steps_per_epoch * t.epochs)
        warmup = t.warmup_steps
        if t.warmup_tokens is not None:  # tokens per step estimated from this data set's mean example length
            mean_length = sum(len(example["input_ids"]) for example in train_set) / max(len(train_set), 1)
            tokens_per_step = t.batch_size * t.gradient_accumulation_steps * mean_length
            warmup = math.ceil(t.warmup_tokens / tokens_per_step)
        scheduler = get_linear_schedule_with_warmup(optimizer, warmup, self.total_steps)
        self.report = parameter_report(self.model)

        (self.model, self.optimizer, self.train_loader, self.valid_loader, self.scheduler) = self.accelerator.prepare(
            self.model, optimizer, train_loader, valid_loader, scheduler
        )
        self.progress = Progress()
        if resume:
            self._load_latest_checkpoint()
            self.results = read_results(self.run_dir)
            self.results.status = "training"
            self.results.epochs = [e for e in self.results.epochs if e.epoch <= self.progress.epoch]
        else:
            self.results = RunResults.start(self.run_dir.name, cfg.to_dict(), environment=collect_environment())
            self.results.parameters = ParameterCounts(**self.report)
        self.results.extra.update(
            num_processes=self.accelerator.num_processes, device=str(self.accelerator.device), command=self.command
        )
        if log_with:
            self.accelerator.init_trackers("tensorboard")

    # -- checkpoints -------------------------------------------------------------------------------------------------

    def _checkpoint_dirs(self) -> list[Path]:
        root = self.run_dir / CHECKPOINTS_DIR
        dirs = [d for d in root.glob("*") if (d / PROGRESS_FILE).is_file()] if root.is_dir() else []
        return sorted(dirs, key=lambda d: json.loads((d / PROGRESS_FILE).read_text())["step"])

    def save_checkpoint(self, name: str) -> None:
        acc = self.accelerator
        directory = self.run_dir / CHECKPOINTS_DIR / name
        if acc.is_main_process:
            save_trained(acc.unwrap_model(self.model), self.cfg.method.name, directory)
            state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
            torch.save(state, directory / "training_state.tmp")
            (directory / "training_state.tmp").replace(directory / STATE_FILE)
        acc.wait_for_everyone()
        torch.save(_rng_state(), directory / f"rng-{acc.process_index}.pt")  # every process has its own RNG
        acc.wait_for_everyone()
        if acc.is_main_process:
            # Written last: a checkpoint without it is incomplete and never resumed from.
            write_json_atomic(directory / PROGRESS_FILE, dataclasses.asdict(self.progress), overwrite=True)
            keep = self.cfg.output.keep_checkpoints
            epoch_dirs = [d for d in self._checkpoint_dirs() if d.name.startswith("epoch-")]
            for old in epoch_dirs[:-keep] if keep else []:
                shutil.rmtree(old)
        acc.wait_for_everyone()

    def _load_latest_checkpoint(self) -> None:
        dirs = self._checkpoint_dirs()
        if not dirs:
            raise RunDirectoryError(f"--resume: no complete checkpoint under {self.run_dir / CHECKPOINTS_DIR}")
        latest = dirs[-1]
        load_trained(self.accelerator.unwrap_model(self.model), latest)
        state = torch.load(latest / STATE_FILE, weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.progress = Progress(**json.loads((latest / PROGRESS_FILE).read_text()))
        _set_rng_state(torch.load(latest / f"rng-{self.accelerator.process_index}.pt", weights_only=False))
        logger.info("resumed from %s (epoch %d, step %d)", latest, self.progress.epoch, self.progress.step)

    # -- loop --------------------------------------------------------------------------------------------------------

    def _training_step(self, batch) -> tuple[float, int]:
        acc, t = self.accelerator, self.cfg.training
        with acc.accumulate(self.model):
            # the LM head and the loss on completion positions only (lora_ft/loss.py; same numbers)
            with completion_positions(self.model, batch["labels"]) as (targets, _rows):
                outputs = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            loss_sum, tokens = completion_loss(outputs.logits, targets, t.label_smoothing)
            global_tokens = acc.gather(tokens.detach()).sum().clamp(min=1)
            # DDP averages gradients over processes: scaling by their number makes this the global token mean.
            acc.backward(loss_sum * acc.num_processes / global_tokens)
            if t.max_grad_norm is not None and acc.sync_gradients:
                acc.clip_grad_norm_(self.model.parameters(), t.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
        total_loss = acc.gather(loss_sum.detach()).sum()
        return float(total_loss / global_tokens), int(global_tokens)

    @torch.no_grad()
    def validation_loss(self) -> float:
        """Token-mean cross-entropy on the validation split, without label smoothing (a plain NLL).

        Per-example sums go through `gather_for_metrics`, which drops the samples Accelerate repeats to even out the
        last batch over processes: the value does not depend on the number of processes."""
        self.model.eval()
        loss_total, token_total = 0.0, 0
        for batch in self.valid_loader:
            with completion_positions(self.model, batch["labels"]) as (targets, rows):
                logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            example_losses, example_tokens = self.accelerator.gather_for_metrics(
                completion_loss_per_example(logits, targets, rows, batch["labels"].shape[0])
            )
            loss_total += float(example_losses.sum())
            token_total += int(example_tokens.sum())
        self.model.train()
        return loss_total / max(token_total, 1)

    def run(self) -> Path:
        acc, t = self.accelerator, self.cfg.training
        start = time.time()
        if acc.is_main_process:
            self._write_config()
            write_results(self.run_dir, self.results)
        logger.info("parameters: %d trainable of %d", self.report["trainable"], self.report["total"])
        bar = tqdm(total=self.total_steps, initial=self.progress.step, disable=not acc.is_main_process, desc="train")
        self.model.train()
        done = self.progress.step >= self.total_steps
        while self.progress.epoch < t.epochs and not done:
            epoch = self.progress.epoch + 1
            self.train_loader.set_epoch(epoch)  # data order is a function of (seed, epoch): resumable
            loader = self.train_loader
            if self.progress.batches_in_epoch:
                loader = acc.skip_first_batches(loader, self.progress.batches_in_epoch)
            epoch_loss, epoch_tokens, window_tokens, window_start = 0.0, 0, 0, time.time()
            for batch in loader:
                loss, tokens = self._training_step(batch)
                epoch_loss += loss * tokens
                epoch_tokens += tokens
                window_tokens += int(acc.gather(batch["attention_mask"].sum()).sum())
                self.progress.batches_in_epoch += 1
                if acc.sync_gradients:
                    self.progress.step += 1
                    bar.update(1)
                    if self.progress.step % t.log_every_steps == 0 or self.progress.step == 1:
                        lr = self.scheduler.get_last_lr()[0]
                        rate = window_tokens / max(time.time() - window_start, 1e-9)
                        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{rate:.0f}")
                        logger.info("step %d loss %.4f lr %.3e tokens/s %.0f", self.progress.step, loss, lr, rate)
                        acc.log({"train/loss": loss, "train/lr": lr, "train/tokens_per_s": rate}, step=self.progress.step)
                        window_tokens, window_start = 0, time.time()
                    if t.checkpoint_every_steps and self.progress.step % t.checkpoint_every_steps == 0:
                        self.save_checkpoint(f"step-{self.progress.step}")
                    if self.progress.step >= self.total_steps:
                        done = True
                        break
            self.progress.epoch, self.progress.batches_in_epoch = epoch, 0
            val = self.validation_loss()
            record = EpochRecord(
                epoch=epoch, step=self.progress.step, train_loss=epoch_loss / max(epoch_tokens, 1),
                validation_loss=val, learning_rate=self.scheduler.get_last_lr()[0], wall_time_s=time.time() - start,
            )
            logger.info("epoch %d: train loss %.4f, validation loss %.4f", epoch, record.train_loss, val)
            acc.log({"valid/loss": val}, step=self.progress.step)
            self.save_checkpoint(f"epoch-{epoch}")
            if acc.is_main_process:
                self.results.add_epoch(record)
                write_results(self.run_dir, self.results)
        bar.close()
        return self.finish(time.time() - start)

    def finish(self, seconds: float) -> Path:
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            save_trained(acc.unwrap_model(self.model), self.cfg.method.name, self.run_dir)
            self.results.status = "trained"
            self.results.wall_time_s = (self.results.wall_time_s or 0.0) + seconds
            peak = _peak_memory_bytes(acc.device)
            self.results.peak_memory_bytes = max(peak, self.results.peak_memory_bytes or 0)
            write_results(self.run_dir, self.results)
            logger.info("trained in %.1f s; weights in %s", seconds, self.run_dir / TRAINED_FILE)
        acc.end_training()
        return self.run_dir

    def _write_config(self) -> None:
        header = f"# Resolved config of this run. Re-run with:\n#   {self.command}\n"
        write_text_atomic(self.run_dir / CONFIG_FILE, header + self.cfg.to_yaml(), overwrite=True)


def _has_tensorboard() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def train(cfg: RunConfig, *, resume: bool = False, command: str | None = None) -> Path:
    """Train one run; on failure results.json says why (status 'failed') and the error propagates."""
    try:
        trainer = Trainer(cfg, resume=resume, command=command or " ".join(["lora-ft", *sys.argv[1:]]))
        try:
            return trainer.run()
        except BaseException as exc:
            if trainer.accelerator.is_main_process:
                trainer.results.mark_failed(exc)
                write_results(trainer.run_dir, trainer.results)
            raise
    finally:
        _close_run_log()
