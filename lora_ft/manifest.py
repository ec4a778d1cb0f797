"""A checkpoint's manifest.json: every file's size and sha256, written last; what `--resume` verifies before use.

A checkpoint's files are plain names in its folder, and, in a sharded (FSDP) checkpoint, also `model/<shard file>` and
`optimizer/<shard file>` (sharded.py). The manifest holds its own sha256 too, so that a damaged manifest is noticed.
Verification can be split over the processes of a sharded run (`share`): each process hashes one part of the shards.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .errors import UserError
from .results import write_json_atomic
from .sharded import MODEL_DIR, OPTIMIZER_DIR, SHARD_FILE

MANIFEST_FILE = "manifest.json"
CHECKPOINT_FORMAT = "lora-ft-checkpoint/1"
OLD_STATE_FILE = "training_state.pt"  # lora-ft before checkpoint format 1: a pickle, never loaded
SHARD_FOLDERS = (MODEL_DIR, OPTIMIZER_DIR)


class CheckpointError(UserError, RuntimeError):
    """A damaged, incomplete or foreign checkpoint or trained-weights file."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": file_sha256(path)}


def is_shard_name(name: str) -> bool:
    folder, _, file = name.partition("/")
    return folder in SHARD_FOLDERS and SHARD_FILE.fullmatch(file) is not None


def write_manifest(directory: Path, progress: dict, num_processes: int, *, known: dict | None = None, **extra) -> None:
    """Record every file of `directory` (and of its shard folders) with its size and sha256; written last, it marks
    the checkpoint complete. `known`: entries already computed (the shards, hashed by the processes that wrote
    them); `extra`: more keys (a sharded checkpoint's "sharded" and "trained")."""
    files = {p.name: file_entry(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST_FILE}
    for folder in SHARD_FOLDERS:
        if (directory / folder).is_dir():
            for p in sorted((directory / folder).iterdir()):
                name = f"{folder}/{p.name}"
                files[name] = (known or {}).get(name) or file_entry(p)
    manifest = {"format": CHECKPOINT_FORMAT, "progress": progress, "num_processes": num_processes, "files": files, **extra}
    manifest["sha256"] = _manifest_digest(manifest)
    write_json_atomic(directory / MANIFEST_FILE, manifest, overwrite=True)


def _manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's own content (all but this field), so that a damaged manifest is noticed too."""
    content = {k: v for k, v in manifest.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def read_manifest(directory: Path) -> dict:
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


def verify_files(directory: Path, manifest: dict, names, share: tuple[int, int] | None = None) -> None:
    """Check `names` against the manifest: listed, present, the recorded size and sha256. With `share` = (i, n), only
    every n-th shard file from the i-th is hashed here (the other processes hash the rest); the others' sizes still."""
    files = manifest["files"]
    shards = sorted(name for name in names if is_shard_name(name))
    mine = set(shards[share[0]::share[1]]) if share else set(shards)
    for name in names:
        if name not in files:
            raise CheckpointError(f"{directory}: {MANIFEST_FILE} does not list {name}")
        if not (Path(name).name == name and name not in (".", "..")) and not is_shard_name(name):
            raise CheckpointError(f"{directory}: {MANIFEST_FILE} names {name!r}, which is not a file of the checkpoint")
        path, entry = directory / name, files[name]
        if not path.is_file():
            raise CheckpointError(f"{directory}: {name} is missing")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise CheckpointError(f"{directory}: {name} has {size} bytes, {MANIFEST_FILE} says {entry['bytes']} (truncated or replaced)")
        if (name in mine or not is_shard_name(name)) and file_sha256(path) != entry["sha256"]:
            raise CheckpointError(f"{directory}: {name} does not match its sha256 in {MANIFEST_FILE} (damaged or replaced)")
