"""Writing files atomically, with the permissions the user's umask asks for, and one clear line when the disk is full.

Every file lora-ft writes goes through a temporary file in the same folder that is renamed over the target once it is
complete and on disk (fsync), so readers see either the old file or the whole new one, and a crash or a full disk never
leaves half a file in place of a good one.

- :func:`write_bytes_atomic` (and the text / JSON writers in ``results.py``) for bytes lora-ft has in memory;
- :func:`atomic_output` for a file that another library writes (``torch.save``, safetensors' ``save_file``): it hands
  out the temporary path and does the rest;
- :func:`disk_full_is_user_error` around writers of whole folders (``save_pretrained``).

Permissions: the new file gets the mode any new file gets (0o666 filtered by the umask), not ``tempfile.mkstemp``'s or
safetensors' fixed 0o600, which would make results unreadable to a group sharing runs.

A full disk or an exceeded quota becomes a :class:`DiskFullError` (a UserError: one line, exit 2) naming the file,
instead of a C++ message from torch (``[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534``, measured
with torch 2.13 on a full tmpfs) or a Rust one from safetensors.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator

from .errors import UserError


class DiskFullError(UserError):
    """A write failed because its filesystem is full or the user's quota is used up."""


_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# How the libraries word ENOSPC / EDQUOT. safetensors (Rust): "I/O error: No space left on device (os error 28)".
_DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "os error 28", "os error 122")
# torch.save reports a failed write without its errno. Measured on a full tmpfs (torch 2.13), depending on where the
# disk fills up: "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534", or "basic_ios::clear:
# iostream error" alone; c10's zip writer also says "file write failed". A full disk or quota is by far the likeliest.
_TORCH_WRITE_FAILED = ("unexpected pos", "file write failed")
_TORCH_STREAM_FAILED = "basic_ios::clear: iostream error"


def _free_space(path: Path) -> str:
    for folder in (path, *path.parents):
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            continue
        for unit in ("bytes", "KiB", "MiB", "GiB"):
            if free < 1024 or unit == "GiB":
                return f"{free:.0f} {unit}" if unit == "bytes" else f"{free:.1f} {unit}"
            free /= 1024
    return "unknown"


def disk_full_error(path: str | os.PathLike[str], exc: BaseException, *, kept: bool = False) -> DiskFullError | None:
    """The one-line error for a failed write of ``path`` (a file, or the folder being written) if ``exc`` (or an error
    it wraps) says the disk is full or over quota; None for any other failure, which stays what it is. ``kept``: the
    message says that the previous file is kept (true of the atomic writers)."""
    path = Path(path)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        if isinstance(current, OSError) and current.errno in _DISK_FULL_ERRNOS:
            reason = os.strerror(current.errno).lower()
        elif any(t in text for t in _DISK_FULL_TEXTS):
            reason = "disk quota exceeded" if ("quota" in text or "error 122" in text) else "no space left on device"
        elif ("inline_container.cc" in text and any(t in text for t in _TORCH_WRITE_FAILED)) or _TORCH_STREAM_FAILED in text:
            reason = "torch could not write it; most likely the disk is full or over quota"
        else:
            current = current.__cause__ or current.__context__
            continue
        return DiskFullError(
            f"could not write {path}: {reason} ({_free_space(path)} free there). Free some space and run the command "
            f"again ({_ADVICE.get()})" + (f"; the previous {path.name}, if any, is kept" if kept else "")
        )
    return None


# What running the command again does, in the message above; a command whose rerun is not training's says its own.
_ADVICE: ContextVar[str] = ContextVar("disk_full_advice", default="a training run continues from its last checkpoint with --resume")


@contextmanager
def disk_full_advice(text: str) -> Iterator[None]:
    """Inside the block (or the decorated function), a full disk's message ends with `text` instead of training's
    --resume advice."""
    token = _ADVICE.set(text)
    try:
        yield
    finally:
        _ADVICE.reset(token)


class NotWritableError(UserError):
    """A folder lora-ft must write into is on a read-only file system, or not the user's to write."""


_NOT_WRITABLE_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}


def check_writable(path: str | os.PathLike[str], what: str, fix: str) -> None:
    """Refuse at once, in one line, an output folder that cannot be written (a read-only mount, another user's folder),
    before any model loads or decodes: `what` names the setting (output.dir, --out), `fix` says what to do.

    `path` need not exist: its nearest existing folder is tried by creating and removing a hidden empty file, since
    permission bits say nothing of a read-only mount or of root. Other failures pass: the writes report them later."""
    folder = Path(path)
    while not folder.is_dir():
        if folder.exists() or folder.parent == folder:
            return  # a file in the way, or no folder at all: the command's own checks word it
        folder = folder.parent
    probe = _temporary_path(folder / ".lora-ft-write-check")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        if exc.errno in _NOT_WRITABLE_ERRNOS:
            where = "" if folder == Path(path) else f" ({folder} is)"
            raise NotWritableError(
                f"{what} {path} is not writable{where}: {os.strerror(exc.errno).lower()}; {fix}"
            ) from None
        return
    os.close(fd)
    os.unlink(probe)


@contextmanager
def disk_full_is_user_error(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a full disk or quota inside the block into a :class:`DiskFullError` naming ``path``: for writers that are
    not atomic, e.g. ``save_pretrained`` filling a new export folder. Any other error passes unchanged."""
    try:
        yield
    except Exception as exc:
        full = disk_full_error(path, exc)
        if full is None:
            raise
        raise full from exc


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable. Some filesystems cannot fsync a folder; the rename itself has happened either way."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """This process's umask, read without changing it where Linux shows it (os.umask can only read it by setting it,
    which would race with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | os.PathLike[str]) -> None:
    """Give a file written by a library the mode any new file gets (0o666 filtered by the umask): safetensors 0.8
    creates its files 0o600 whatever the umask (measured), which hides results from a group that shares runs."""
    os.chmod(path, 0o666 & ~current_umask())


def _temporary_path(path: Path) -> Path:
    # In the target's folder (so that the rename is atomic), hidden, unique per process and call.
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextmanager
def atomic_output(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path for a writer (``torch.save(obj, tmp)``, ``save_file(tensors, tmp)``); once the block
    ends without error the file is synced and renamed to ``path``. On any error the temporary file is removed and
    ``path`` is left as it was; a full disk or quota becomes :class:`DiskFullError`.

    Refuses to replace an existing file unless ``overwrite=True``. Creates missing parent folders.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    tmp = _temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)  # fsync works on a read-only descriptor: the writer's data reaches the disk
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        honour_umask(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        full = disk_full_error(path, exc, kept=True)
        if full is not None:
            raise full from exc
        raise
    _fsync_folder(path.parent)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`); the new file's mode follows the umask."""
    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        # O_EXCL: never write through a file (or link) someone else put there; mode 0o666 & ~umask, as open() gives.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    return path
