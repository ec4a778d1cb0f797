"""Checkpoints: what a method trained (a GPT-2 M LoRA r=4 run is about 1.5 MB) and everything `--resume` needs.

`trained.safetensors` (in a run directory and in every checkpoint) holds the trainable tensors and, in its metadata,
a sha256 of their bytes: a damaged file is a one-line error, never a model with wrong weights.

A checkpoint `checkpoints/<name>/` holds trained.safetensors, optimizer.safetensors + optimizer.json,
scheduler.json, rng-<process>.safetensors + rng-<process>.json (one pair per process), progress.json and, written
last, manifest.json: every other file's size and sha256. It is written as `checkpoints/.partial-<name>/` and renamed
when complete. `--resume` uses the newest checkpoint whose files match its manifest and names every one it skipped.
Nothing in a run directory is ever unpickled (see training_state.py).
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

from .errors import UserError
from .methods.base import Method
from .atomic import atomic_output
from .results import write_json_atomic
from .training_state import load_state, rng_state, save_state, set_rng_state

logger = logging.getLogger("lora_ft.checkpoint")

TRAINED_FILE = "trained.safetensors"
PROGRESS_FILE = "progress.json"
MANIFEST_FILE = "manifest.json"
CHECKPOINT_FORMAT = "lora-ft-checkpoint/1"
PARTIAL_PREFIX = ".partial-"  # a checkpoint being written; renamed to its name once its manifest is in place
OLD_STATE_FILE = "training_state.pt"  # lora-ft before checkpoint format 1: a pickle, never loaded
TENSORS_SHA256_KEY = "tensors_sha256"
REQUIRED_FILES = (TRAINED_FILE, "optimizer.json", "scheduler.json", PROGRESS_FILE, "rng-0.json")


class CheckpointError(UserError, RuntimeError):
    """A damaged, incomplete or foreign checkpoint or trained-weights file."""


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


def save_trained(model: nn.Module, method: Method, directory: Path) -> Path:
    """Write the trainable tensors to `directory/trained.safetensors` atomically; returns the path.

    The metadata holds the method's name, what the method needs to read the tensors back (`Method.checkpoint_metadata`,
    e.g. LoRA's slice names) and the tensors' sha256."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.contiguous().cpu() for name, t in trainable_state_dict(model).items()}
    metadata = {"method": method.name, "format": "lora-ft/1", **method.checkpoint_metadata(model)}
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
        raise FileNotFoundError(f"{path} does not exist: is {directory} a finished lora-ft run or checkpoint?")
    if (path.parent / MANIFEST_FILE).is_file():
        _verify_files(path.parent, _read_manifest(path.parent), [TRAINED_FILE])
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


# -- manifest ----------------------------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, progress: dict, num_processes: int) -> None:
    """Record every file of `directory` with its size and sha256; written last, it marks the checkpoint complete."""
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST_FILE
    }
    manifest = {"format": CHECKPOINT_FORMAT, "progress": progress, "num_processes": num_processes, "files": files}
    manifest["sha256"] = _manifest_digest(manifest)
    write_json_atomic(directory / MANIFEST_FILE, manifest, overwrite=True)


def _manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's own content (all but this field), so that a damaged manifest is noticed too."""
    content = {k: v for k, v in manifest.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST_FILE
    if not path.is_file():
        if (directory / OLD_STATE_FILE).exists():
            raise CheckpointError(
                f"{directory}: written by an older lora-ft ({OLD_STATE_FILE} is a pickle, and loading a pickle can run code), "
                "so it cannot be resumed safely; start the run again"
            )
        raise CheckpointError(f"{directory}: incomplete: it has no {MANIFEST_FILE} (the run stopped while writing it)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{directory}: its {MANIFEST_FILE} is unreadable ({exc})") from exc
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("format") != CHECKPOINT_FORMAT or not all(
        isinstance(e, dict) and isinstance(e.get("bytes"), int) and isinstance(e.get("sha256"), str) for e in files.values()
    ):
        raise CheckpointError(f"{directory}: its {MANIFEST_FILE} is not a {CHECKPOINT_FORMAT} manifest")
    if manifest.get("sha256") != _manifest_digest(manifest):
        raise CheckpointError(f"{directory}: its {MANIFEST_FILE} is damaged (its content does not match its sha256)")
    return manifest


def _verify_files(directory: Path, manifest: dict, names) -> None:
    files = manifest["files"]
    for name in names:
        if name not in files:
            raise CheckpointError(f"{directory}: {MANIFEST_FILE} does not list {name}")
        if Path(name).name != name or name in (".", ".."):
            raise CheckpointError(f"{directory}: {MANIFEST_FILE} names {name!r}, which is not a file of the checkpoint")
        path, entry = directory / name, files[name]
        if not path.is_file():
            raise CheckpointError(f"{directory}: {name} is missing")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise CheckpointError(f"{directory}: {name} has {size} bytes, {MANIFEST_FILE} says {entry['bytes']} (truncated or replaced)")
        if file_sha256(path) != entry["sha256"]:
            raise CheckpointError(f"{directory}: {name} does not match its sha256 in {MANIFEST_FILE} (damaged or replaced)")


def verify_checkpoint(directory: Path) -> dict:
    """The manifest of a checkpoint whose every file is there, with the size and sha256 the manifest records."""
    manifest = _read_manifest(directory)
    missing = [name for name in REQUIRED_FILES if name not in manifest["files"]]
    if missing:
        raise CheckpointError(f"{directory}: its {MANIFEST_FILE} does not list {', '.join(missing)}")
    _verify_files(directory, manifest, manifest["files"])
    return manifest


# -- whole checkpoints -------------------------------------------------------------------------------------------------


def write_checkpoint(accelerator, root: Path, name: str, *, model, method: Method, optimizer, scheduler, progress: dict) -> Path:
    """Write checkpoint `root/name` from every process (each saves its own RNG state); replaces an older one of that
    name only once the new one is complete. Returns its directory."""
    acc = accelerator
    final, partial = root / name, root / f"{PARTIAL_PREFIX}{name}"
    if acc.is_main_process:
        if partial.exists():  # left by a run that stopped while writing it
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        save_trained(acc.unwrap_model(model), method, partial)
        save_state(optimizer.state_dict(), partial, "optimizer")
        save_state(scheduler.state_dict(), partial, "scheduler")
        write_json_atomic(partial / PROGRESS_FILE, progress, overwrite=True)
    acc.wait_for_everyone()
    save_state(rng_state(), partial, f"rng-{acc.process_index}")  # every process has its own generators
    acc.wait_for_everyone()
    if acc.is_main_process:
        write_manifest(partial, progress, acc.num_processes)
        if final.exists():
            replaced = root / f".replaced-{name}"
            shutil.rmtree(replaced, ignore_errors=True)
            final.rename(replaced)
            partial.rename(final)
            shutil.rmtree(replaced)
        else:
            partial.rename(final)
    acc.wait_for_everyone()
    return final


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


def load_checkpoint(directory: Path, manifest: dict, accelerator, *, model, optimizer, scheduler) -> dict:
    """Restore a verified checkpoint into the model, optimizer, scheduler and this process's RNGs; returns its progress.

    Every file is parsed (CheckpointError if one does not) before anything is changed; only a malformed RNG state
    can fail after that, and falling back to another checkpoint then replaces everything again."""
    tensors, metadata = read_trained(directory)
    optimizer_state = _read(directory, "optimizer.json", lambda: load_state(directory, "optimizer"))
    scheduler_state = _read(directory, "scheduler.json", lambda: load_state(directory, "scheduler"))
    progress = _read(directory, PROGRESS_FILE, lambda: json.loads((directory / PROGRESS_FILE).read_text(encoding="utf-8")))
    if not isinstance(progress, dict):
        raise CheckpointError(f"{directory}: {PROGRESS_FILE} does not hold an object")
    rng_stem = f"rng-{accelerator.process_index}"
    rng = None
    if f"{rng_stem}.json" in manifest["files"]:
        rng = _read(directory, f"{rng_stem}.json", lambda: load_state(directory, rng_stem))
    apply_trained(accelerator.unwrap_model(model), tensors, metadata, directory)
    optimizer.load_state_dict(optimizer_state)
    scheduler.load_state_dict(scheduler_state)
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


def resume_latest(root: Path, accelerator, *, model, optimizer, scheduler) -> tuple[Path | None, dict | None, list[str]]:
    """Load the newest intact checkpoint under `root`: (its directory, its progress, what was skipped and why).

    Each skipped checkpoint is also a warning that names it; (None, None, skipped) when none is intact."""
    # Hidden ones too: a complete `.partial-<name>` or `.replaced-<name>` is left if a run stops between the renames.
    dirs = [d for d in root.iterdir() if d.is_dir()] if root.is_dir() else []
    skipped = []
    for directory in sorted(dirs, key=_recorded_order, reverse=True):
        try:
            manifest = verify_checkpoint(directory)
            progress = load_checkpoint(directory, manifest, accelerator, model=model, optimizer=optimizer, scheduler=scheduler)
        except CheckpointError as exc:
            reason = str(exc).removeprefix(f"{directory}: ")
            skipped.append(f"{directory.name} ({reason})")
            _warn(f"--resume: skipping checkpoint {directory}: {reason}", accelerator)
            continue
        if skipped:
            _warn(f"--resume: continuing from {directory} (step {progress.get('step')}), the newest intact checkpoint", accelerator)
        return directory, progress, skipped
    return None, None, skipped
