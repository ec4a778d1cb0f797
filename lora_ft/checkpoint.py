"""Checkpoints: what a method trained (a GPT-2 M LoRA r=4 run is about 1.5 MB) and everything `--resume` needs.

`trained.safetensors` (in a run directory and in every checkpoint) holds the trainable tensors and, in its metadata,
a sha256 of their bytes: a damaged file is a one-line error, never a model with wrong weights.

A checkpoint `checkpoints/<name>/` holds trained.safetensors, optimizer.safetensors + optimizer.json,
scheduler.json, rng-<process>.safetensors + rng-<process>.json (one pair per process), scaler.json (fp16's loss
scale), progress.json and, written last, manifest.json: every other file's size and sha256 (manifest.py). Under FSDP
the trained tensors and the optimizer's tensors are instead written by every process, its own shard, in model/ and
optimizer/ (sharded.py). It is written as `checkpoints/.partial-<name>/` and renamed when complete. `--resume` uses
the newest checkpoint whose files match its manifest and names every one it skipped. Nothing in a run directory is
ever unpickled (see training_state.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from .methods.base import Method
from .atomic import atomic_output
from .manifest import (
    MANIFEST_FILE, CheckpointError, file_entry, read_manifest, verify_files, write_manifest,  # noqa: F401 (re-exported)
)
from .results import write_json_atomic
from .sharded import (
    FINAL_DIR, MODEL_DIR, is_sharded, load_sharded_state, own_shard_files, read_sharded_model, save_sharded_state,
    save_sharded_weights,
)
from .training_state import load_state, rng_state, save_state, set_rng_state

logger = logging.getLogger("lora_ft.checkpoint")

TRAINED_FILE = "trained.safetensors"
PROGRESS_FILE = "progress.json"
PARTIAL_PREFIX = ".partial-"  # a checkpoint being written; renamed to its name once its manifest is in place
TENSORS_SHA256_KEY = "tensors_sha256"
REQUIRED_FILES = (TRAINED_FILE, "optimizer.json", "scheduler.json", PROGRESS_FILE, "rng-0.json")
REQUIRED_SHARDED = ("optimizer.json", "scheduler.json", PROGRESS_FILE, "rng-0.json")  # and model/ files


def _warn(message: str, accelerator=None) -> None:
    """To train.log and the terminal (console.py prints warnings; main process only, unless the message is about
    this process)."""
    if accelerator is None or accelerator.is_main_process:
        logger.warning(message)


# -- trained tensors ---------------------------------------------------------------------------------------------------


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    # named_parameters() lists a tied tensor once (GPT-2's LM head is the token embedding).
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def trained_metadata(model: nn.Module, method: Method) -> dict[str, str]:
    """The method's name and what the method needs to read its tensors back (`Method.checkpoint_metadata`, e.g. LoRA's
    slice names)."""
    return {"method": method.name, "format": "lora-ft/1", **method.checkpoint_metadata(model)}


def save_trained(model: nn.Module, method: Method, directory: Path, tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the trainable tensors (or `tensors`, gathered from a sharded model) to `directory/trained.safetensors`
    atomically; returns the path. The metadata holds `trained_metadata` and the tensors' sha256."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.contiguous().cpu() for name, t in (tensors or trainable_state_dict(model)).items()}
    metadata = trained_metadata(model, method)
    metadata[TENSORS_SHA256_KEY] = tensors_digest(tensors)
    path = directory / TRAINED_FILE
    with atomic_output(path, overwrite=True) as tmp:  # synced, renamed, umask mode, one-line error on a full disk
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_trained(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of `directory/trained.safetensors`, verified against its checksum (and against the
    directory's manifest when it is a checkpoint); CheckpointError if the file is damaged."""
    path = Path(directory) / TRAINED_FILE
    if not path.is_file():
        for folder in (Path(directory), Path(directory) / FINAL_DIR):  # a sharded checkpoint, an FT run's final state
            if (folder / MODEL_DIR).is_dir() and (folder / MANIFEST_FILE).is_file():
                return read_sharded_trained(folder)
        raise FileNotFoundError(f"{path} does not exist: is {directory} a finished lora-ft run or checkpoint?")
    if (path.parent / MANIFEST_FILE).is_file():
        verify_files(path.parent, read_manifest(path.parent), [TRAINED_FILE])
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is damaged or not a safetensors file ({exc}); retrain, or use another checkpoint") from exc
    expected = metadata.get(TENSORS_SHA256_KEY)  # absent in files from lora-ft before the checksum
    if expected is not None and tensors_digest(tensors) != expected:
        raise CheckpointError(f"{path} is damaged: its tensors do not match the checksum saved with them")
    return tensors, metadata


def read_sharded_trained(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The whole trained tensors of an FSDP run's shards (verified against their manifest), in this process."""
    manifest = read_manifest(folder)
    verify_files(folder, manifest, [name for name in manifest["files"] if name.startswith(f"{MODEL_DIR}/")])
    try:
        return read_sharded_model(folder), dict(manifest.get("trained") or {})
    except Exception as exc:  # DCP reports a bad shard as CheckpointException; any failure here is the files'
        raise CheckpointError(f"{folder}: its {MODEL_DIR}/ shards cannot be read ({type(exc).__name__}: {exc})") from exc


def apply_trained(model: nn.Module, tensors: dict[str, torch.Tensor], metadata: dict[str, str], source: Path) -> None:
    """Copy saved trained tensors into a model adapted with the same config; every trainable tensor must be there."""
    expected = set(trainable_state_dict(model))
    missing, unexpected = expected - set(tensors), set(tensors) - expected
    if missing or unexpected:
        raise ValueError(
            f"{source}/{TRAINED_FILE} does not fit this model (method {metadata.get('method')!r}): "
            f"{len(missing)} trained tensors missing (e.g. {sorted(missing)[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {sorted(unexpected)[:2]}). Was it trained with another config?"
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)


def load_trained(model: nn.Module, directory: Path) -> None:
    tensors, metadata = read_trained(directory)
    apply_trained(model, tensors, metadata, directory)


def load_lora_factors(run_dir: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(A, B) per adapted weight from a run directory's saved LoRA weights, without building the model."""
    from .methods.lora import SLICES_METADATA_KEY, factors_from_state_dict

    tensors, metadata = read_trained(Path(run_dir))
    if SLICES_METADATA_KEY not in metadata:
        raise CheckpointError(f"{run_dir} holds no LoRA weights (method: {metadata.get('method', 'unknown')})")
    return factors_from_state_dict(tensors, metadata)


# -- whole checkpoints -------------------------------------------------------------------------------------------------


def _agree(accelerator, error: str | None) -> str | None:
    """The first error any process of a sharded run met (every process gets the same verdict)."""
    if not (is_sharded(accelerator) and accelerator.num_processes > 1):
        return error
    from accelerate.utils import gather_object

    return next((e for e in gather_object([error]) if e), None)


def write_checkpoint(accelerator, root: Path, name: str, *, model, method: Method, optimizer, scheduler, progress: dict,
                     scaler=None) -> Path:
    """Write checkpoint `root/name` from every process (each saves its own RNG state, and under FSDP its shards);
    replaces an older one of that name only once the new one is complete. Returns its directory."""
    acc = accelerator
    sharded = is_sharded(acc)
    final, partial = root / name, root / f"{PARTIAL_PREFIX}{name}"
    if acc.is_main_process:
        if partial.exists():  # left by a run that stopped while writing it
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        if not sharded:
            save_trained(acc.unwrap_model(model), method, partial)
            save_state(optimizer.state_dict(), partial, "optimizer")
        save_state(scheduler.state_dict(), partial, "scheduler")
        if scaler is not None:  # fp16: the loss scale and its growth counter
            save_state(scaler.state_dict(), partial, "scaler")
        write_json_atomic(partial / PROGRESS_FILE, progress, overwrite=True)
    acc.wait_for_everyone()
    shards, extra = {}, {}
    if sharded:  # every process its shard of the model and optimizer state; the main process the optimizer's values
        optimizer_values = save_sharded_state(partial, model, optimizer)
        if acc.is_main_process:
            save_state(optimizer_values, partial, "optimizer")
        shards = _shard_entries(acc, partial)
        extra = {"sharded": True, "trained": trained_metadata(acc.unwrap_model(model), method)}
    save_state(rng_state(), partial, f"rng-{acc.process_index}")  # every process has its own generators
    acc.wait_for_everyone()
    if acc.is_main_process:
        write_manifest(partial, progress, acc.num_processes, known=shards, **extra)
        _swap_in(partial, final)
    acc.wait_for_everyone()
    return final


def _shard_entries(accelerator, directory: Path) -> dict:
    """Size and sha256 of every shard under `directory`, each hashed by the process that wrote it (a collective)."""
    from accelerate.utils import gather_object

    own = {name: file_entry(directory / name) for name in own_shard_files(directory, accelerator.process_index)}
    return {k: v for part in gather_object([own]) for k, v in part.items()}


def _swap_in(partial: Path, final: Path) -> None:
    """Rename the complete `partial` to `final`, replacing an older `final` only now."""
    if final.exists():
        replaced = final.parent / f".replaced-{final.name}"
        shutil.rmtree(replaced, ignore_errors=True)
        final.rename(replaced)
        partial.rename(final)
        shutil.rmtree(replaced)
    else:
        partial.rename(final)


def write_final_sharded(accelerator, run_dir: Path, model, method: Method) -> Path:
    """FT under FSDP: the final weights as every process's shard, `run_dir/trained-sharded/` (model/ and a manifest);
    `lora-ft export` and `eval` consolidate it (read_trained). No process holds the whole model while writing."""
    acc = accelerator
    final, partial = run_dir / FINAL_DIR, run_dir / f"{PARTIAL_PREFIX}{FINAL_DIR}"
    if acc.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    acc.wait_for_everyone()
    save_sharded_weights(partial, model)
    shards = _shard_entries(acc, partial)
    if acc.is_main_process:
        write_manifest(partial, {}, acc.num_processes, known=shards, sharded=True,
                       trained=trained_metadata(acc.unwrap_model(model), method))
        _swap_in(partial, final)
    acc.wait_for_everyone()
    return final


def verify_checkpoint(directory: Path, share: tuple[int, int] | None = None) -> dict:
    """The manifest of a checkpoint whose every file is there, with the size and sha256 the manifest records (with
    `share` = (i, n), this process hashes the i-th of n parts of the shards)."""
    manifest = read_manifest(directory)
    sharded = manifest.get("sharded") is True
    missing = [name for name in (REQUIRED_SHARDED if sharded else REQUIRED_FILES) if name not in manifest["files"]]
    if sharded and not any(name.startswith(f"{MODEL_DIR}/") for name in manifest["files"]):
        missing.append(f"{MODEL_DIR}/")
    if missing:
        raise CheckpointError(f"{directory}: its {MANIFEST_FILE} does not list {', '.join(missing)}")
    verify_files(directory, manifest, manifest["files"], share)
    return manifest


def _recorded_order(directory: Path) -> tuple[float, float]:
    """(step, epoch) as the checkpoint records them; unknown (unreadable) sorts as newest, so that it is reported."""
    for name, key in ((MANIFEST_FILE, "progress"), (PROGRESS_FILE, None)):
        try:
            data = json.loads((directory / name).read_text(encoding="utf-8"))
            progress = data[key] if key else data
            return float(progress["step"]), float(progress.get("epoch", 0))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return float("inf"), float("inf")


def checkpoint_dirs(root: Path) -> list[Path]:
    """Checkpoints with a manifest (not yet verified), oldest first."""
    dirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and (d / MANIFEST_FILE).is_file()] if root.is_dir() else []
    return sorted(dirs, key=_recorded_order)


def _read(directory: Path, name: str, read):
    try:
        return read()
    except (OSError, ValueError, SafetensorError, KeyError, TypeError) as exc:  # ValueError covers StateFormatError, JSON
        raise CheckpointError(f"{directory}: {name} cannot be read ({type(exc).__name__}: {exc})") from exc


def load_checkpoint(directory: Path, manifest: dict, accelerator, *, model, optimizer, scheduler, scaler=None) -> dict:
    """Restore a verified checkpoint into the model, optimizer, scheduler, loss scaler and this process's RNGs;
    returns its progress.

    Every file is parsed (CheckpointError if one does not) before anything is changed; only a malformed RNG state
    can fail after that (and, sharded, a shard DCP cannot read: the processes agree on it), and falling back to another
    checkpoint then replaces everything again. A sharded checkpoint loads into any number of processes (DCP reshards);
    one written without FSDP cannot be loaded into an FSDP run."""
    sharded = manifest.get("sharded") is True
    if is_sharded(accelerator) and not sharded:
        raise CheckpointError(f"{directory}: written without FSDP (one trained.safetensors), and this run shards its "
                              "model with FSDP: resume it as it was launched")
    tensors = metadata = None
    if not sharded:
        tensors, metadata = read_trained(directory)
    optimizer_state = _read(directory, "optimizer.json", lambda: load_state(directory, "optimizer"))
    scheduler_state = _read(directory, "scheduler.json", lambda: load_state(directory, "scheduler"))
    scaler_state = None
    if "scaler.json" in manifest["files"]:
        scaler_state = _read(directory, "scaler.json", lambda: load_state(directory, "scaler"))
    progress = _read(directory, PROGRESS_FILE, lambda: json.loads((directory / PROGRESS_FILE).read_text(encoding="utf-8")))
    if not isinstance(progress, dict):
        raise CheckpointError(f"{directory}: {PROGRESS_FILE} does not hold an object")
    rng_stem = f"rng-{accelerator.process_index}"
    rng = None
    if f"{rng_stem}.json" in manifest["files"]:
        rng = _read(directory, f"{rng_stem}.json", lambda: load_state(directory, rng_stem))
    if sharded:
        try:
            load_sharded_state(directory, model, optimizer, optimizer_state)
        except Exception as exc:  # DCP's CheckpointException (all processes get it), or values that do not fit
            raise CheckpointError(f"{directory}: its shards do not load into this run ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    else:
        apply_trained(accelerator.unwrap_model(model), tensors, metadata, directory)
        optimizer.load_state_dict(optimizer_state)
    scheduler.load_state_dict(scheduler_state)
    if scaler is not None and scaler_state is not None:
        scaler.load_state_dict(scaler_state)
    elif scaler is not None:
        _warn(f"{directory} holds no loss-scaler state (scaler.json): fp16's loss scale starts again from its default",
              accelerator)
    if rng is not None:
        try:
            set_rng_state(rng)
        except (ValueError, TypeError, KeyError, RuntimeError) as exc:  # torch.set_rng_state: RuntimeError
            raise CheckpointError(f"{directory}: {rng_stem}.json holds no valid RNG state ({exc})") from exc
    if manifest.get("num_processes") != accelerator.num_processes:
        _warn(f"{directory} was written by {manifest.get('num_processes')} processes and this run has "
              f"{accelerator.num_processes}: processes without a saved RNG state start fresh random draws (dropout), "
              "so the run will not match an uninterrupted one exactly", accelerator)
    return progress


def resume_latest(root: Path, accelerator, *, model, optimizer, scheduler, scaler=None) -> tuple[Path | None, dict | None, list[str]]:
    """Load the newest intact checkpoint under `root`: (its directory, its progress, what was skipped and why).

    Each skipped checkpoint is also a warning that names it; (None, None, skipped) when none is intact. In a sharded
    run every process verifies a part of the shards and all agree before loading (and after: a shard DCP could not
    read is skipped by all)."""
    # Hidden ones too: a complete `.partial-<name>` or `.replaced-<name>` is left if a run stops between the renames.
    dirs = [d for d in root.iterdir() if d.is_dir()] if root.is_dir() else []
    share = (accelerator.process_index, accelerator.num_processes) if is_sharded(accelerator) else None
    skipped = []
    for directory in sorted(dirs, key=_recorded_order, reverse=True):
        error = progress = None
        try:
            manifest = verify_checkpoint(directory, share)
        except CheckpointError as exc:
            error = str(exc)
        if _agree(accelerator, error) is None:
            try:
                progress = load_checkpoint(directory, manifest, accelerator, model=model, optimizer=optimizer,
                                           scheduler=scheduler, scaler=scaler)
            except CheckpointError as exc:
                error = str(exc)
        error = _agree(accelerator, error)
        if error is not None:
            reason = error.removeprefix(f"{directory}: ")
            skipped.append(f"{directory.name} ({reason})")
            _warn(f"--resume: skipping checkpoint {directory}: {reason}", accelerator)
            continue
        if skipped:
            _warn(f"--resume: continuing from {directory} (step {progress.get('step')}), the newest intact checkpoint", accelerator)
        return directory, progress, skipped
    return None, None, skipped
