"""The run directory's ``results.json``: one schema, written atomically, updated without losing any writer's record.

This is the ONLY module that writes result files. Every run directory holds one ``results.json`` (a
:class:`RunResults`), rewritten in place as the run progresses (status ``training`` → ``trained`` →
``evaluated``, or ``failed``, or ``interrupted`` by SIGTERM / SIGINT, which ``--resume`` continues). Other files a
run produces (predictions, tables, plots, analyses) go through :func:`write_text_atomic`,
:func:`write_json_atomic` or :func:`write_bytes_atomic`, so a crash never leaves a half-written file behind.

Several processes may update one ``results.json``: a training run (its status and epoch records) and any number of
`lora-ft eval --run` (their evaluations), e.g. epochs 1 and 2 decoded on two GPUs while training goes on. Every update
is a read-modify-write under the run's short ``.results.lock`` (:func:`update_results`): it re-reads the file, applies
this writer's change and writes atomically, so no writer's record is lost. The trainer owns every field but
``evaluations`` (:func:`write_results` keeps the evaluations others recorded); an evaluation is appended
(:func:`record_evaluation`), replacing one whose predictions file it rewrote.

Score convention (what ``Evaluation.scores`` holds): the paper's units, exactly as `lora-ft eval --json`
prints them. BLEU, METEOR, ROUGE-L, ROUGE-1/2/L and accuracies are percentages in [0, 100] (the official
E2E scorer's BLEU 0.7203 is stored as 72.03); NIST and CIDEr are raw values. Reports refuse a
percentage outside [0, 100]. Metric names are free-form strings; the report module matches them
case- and punctuation-insensitively (``ROUGE_L`` == ``rouge-l`` == ``rougeL``).

JSON is written strictly (no ``NaN``/``Infinity`` tokens, which other JSON readers reject): a
non-finite float is written as ``null``, i.e. "no usable value" (e.g. a diverged loss).

With several processes (Accelerate), only the main process may call the writers.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import math
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

from .atomic import write_bytes_atomic
from .errors import UserError
from .run_lock import RunLock

logger = logging.getLogger("lora_ft.results")

SCHEMA_VERSION = 1
RESULTS_FILENAME = "results.json"
RESULTS_LOCK_FILENAME = ".results.lock"
# An update holds the results lock for milliseconds: wait this long for another writer, and take over a lock held
# longer than RESULTS_LOCK_STALE_S, whichever host holds it (its holder must have died inside an update).
RESULTS_LOCK_WAIT_S = 60.0
RESULTS_LOCK_STALE_S = 600.0

Status = Literal["training", "trained", "evaluated", "failed", "interrupted"]
STATUSES: tuple[str, ...] = ("training", "trained", "evaluated", "failed", "interrupted")

# Distributions whose versions make a run reproducible; "lora-ft" is this project.
TRACKED_PACKAGES: tuple[str, ...] = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "datasets",
    "sacrebleu",
    "lora-ft",
)


class ResultsError(UserError):
    """A results file is missing, unreadable, or does not follow the schema."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------


@dataclass
class ParameterCounts:
    """Parameters counted on the adapted model (never copied from the paper)."""

    trainable: int
    total: int
    by_kind: dict[str, int] = field(default_factory=dict)  # e.g. {"lora_A": 196608, "lora_B": 196608}


@dataclass
class EpochRecord:
    """One line of training history, written at the end of each epoch."""

    epoch: int
    step: int
    train_loss: float | None = None  # the training objective: label smoothing included (extra["losses"] says which)
    validation_loss: float | None = None  # plain cross-entropy, no label smoothing
    learning_rate: float | None = None
    wall_time_s: float | None = None


@dataclass
class Evaluation:
    """Scores of one decoding pass over one split, with the model of one epoch.

    ``epoch`` is None for "the final model" when it is not tied to an epoch number.
    ``predictions_file`` is relative to the run directory.
    """

    split: str
    epoch: int | None
    scores: dict[str, float]
    predictions_file: str | None = None
    num_items: int | None = None
    decoding: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResults:
    """Everything one run reports. Serialised to ``<run_dir>/results.json``."""

    run_name: str
    status: Status
    config: dict[str, Any]
    seed: int | None = None
    error: str | None = None
    parameters: ParameterCounts | None = None
    epochs: list[EpochRecord] = field(default_factory=list)
    best_epoch: int | None = None
    evaluations: list[Evaluation] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float | None = None
    peak_memory_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # free-form measurements (latency, ...)
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)
    schema_version: int = SCHEMA_VERSION

    # ---- construction helpers ---------------------------------------------------------------

    @classmethod
    def start(cls, run_name: str, config: Mapping[str, Any], *, environment: dict[str, Any] | None = None) -> "RunResults":
        """A fresh record with status ``training``; the seed is read from ``config["training"]["seed"]``."""
        config = dict(config)
        seed = (config.get("training") or {}).get("seed")
        return cls(run_name=run_name, status="training", config=config, seed=seed, environment=environment or {})

    def add_epoch(self, record: EpochRecord) -> None:
        """Append one epoch and recompute ``best_epoch`` (lowest validation loss)."""
        self.epochs.append(record)
        self.best_epoch = compute_best_epoch(self.epochs)

    def add_evaluation(self, evaluation: Evaluation) -> None:
        """Append one evaluation (kept in the order they were run). One that rewrote an earlier evaluation's
        predictions file replaces it: that record's predictions are gone, and keeping both would let a table pick the
        better of two decodings of one model (tables take each run's best evaluation)."""
        if evaluation.predictions_file is not None:
            self.evaluations = [e for e in self.evaluations if e.predictions_file != evaluation.predictions_file]
        self.evaluations.append(evaluation)

    def mark_failed(self, error: BaseException | str) -> None:
        """Set status ``failed`` with a one-line reason (``"ValueError: ..."``)."""
        if isinstance(error, BaseException):
            error = f"{type(error).__name__}: {error}"
        self.status = "failed"
        self.error = str(error)

    def mark_interrupted(self, error: BaseException | str, *, step: int, signal: str, checkpoint: bool = False) -> None:
        """Set status ``interrupted`` (a signal stopped training at optimizer step ``step``; ``--resume`` continues it)
        with the one-line message, and ``extra["interrupted"]`` = {"signal": "SIGTERM", "step": 12}, plus
        ``"checkpoint": true`` when the run wrote a checkpoint at that step before it stopped."""
        self.mark_failed(error)
        self.status = "interrupted"
        self.extra["interrupted"] = {"signal": signal, "step": step, **({"checkpoint": True} if checkpoint else {})}

    # ---- (de)serialisation ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready dict (nested dataclasses become dicts)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunResults":
        """Build from a dict as written by :meth:`to_dict`; raises :class:`ResultsError` on schema problems."""
        if not isinstance(data, Mapping):
            raise ResultsError(f"results must be a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version is None:
            raise ResultsError("no 'schema_version': this is not a lora-ft results file")
        if not isinstance(version, int) or version < 1:
            raise ResultsError(f"bad schema_version {version!r}: expected a positive integer")
        if version > SCHEMA_VERSION:
            raise ResultsError(
                f"results file has schema_version {version}, newer than this lora-ft reads ({SCHEMA_VERSION}); "
                "upgrade lora-ft to read it"
            )
        fields = _check_keys(cls, data, "results")
        if fields["status"] not in STATUSES:
            raise ResultsError(f"status {fields['status']!r} is not one of {', '.join(STATUSES)}")
        if not isinstance(fields["config"], Mapping):
            raise ResultsError("'config' must be an object (the resolved run config)")
        if fields.get("parameters") is not None:
            fields["parameters"] = ParameterCounts(**_check_keys(ParameterCounts, fields["parameters"], "parameters"))
        fields["epochs"] = [
            EpochRecord(**_check_keys(EpochRecord, e, f"epochs[{i}]")) for i, e in enumerate(fields.get("epochs") or [])
        ]
        fields["evaluations"] = [
            Evaluation(**_check_keys(Evaluation, e, f"evaluations[{i}]"))
            for i, e in enumerate(fields.get("evaluations") or [])
        ]
        return cls(**fields)


def _check_keys(cls: type, data: Any, where: str) -> dict[str, Any]:
    """The dataclass fields present in ``data``; unknown or missing required keys are an error."""
    if not isinstance(data, Mapping):
        raise ResultsError(f"{where}: expected an object, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ResultsError(f"{where}: unknown field(s) {', '.join(unknown)} (schema {SCHEMA_VERSION})")
    required = [
        name
        for name, f in known.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    missing = [name for name in required if name not in data]
    if missing:
        raise ResultsError(f"{where}: missing required field(s) {', '.join(missing)}")
    return dict(data)


def compute_best_epoch(epochs: list[EpochRecord]) -> int | None:
    """Epoch number with the lowest finite validation loss (first one on ties); None if none has one."""
    best: EpochRecord | None = None
    for record in epochs:
        loss = record.validation_loss
        if loss is None or not math.isfinite(loss):
            continue
        if best is None or loss < best.validation_loss:  # type: ignore[operator]
            best = record
    return None if best is None else best.epoch


# --------------------------------------------------------------------------------------------
# Reading and writing
# --------------------------------------------------------------------------------------------


def results_path(run_dir: str | os.PathLike[str]) -> Path:
    """``<run_dir>/results.json``."""
    return Path(run_dir) / RESULTS_FILENAME


def update_results(
    run_dir: str | os.PathLike[str],
    change: Callable[[RunResults | None], RunResults],
    *,
    replace_unreadable: bool = False,
) -> RunResults:
    """Apply ``change`` to the current ``results.json`` and write the result, as one step no other writer interleaves.

    ``change`` gets the record as it is on disk now (None if there is none yet) and returns the record to write; it is
    called under the run's results lock, so it must be quick (no decoding, no training). Returns what was written.
    A file that cannot be read raises :class:`ResultsError`, or with ``replace_unreadable`` counts as none.
    """
    lock = RunLock(run_dir, filename=RESULTS_LOCK_FILENAME)
    with lock.acquire(wait_s=RESULTS_LOCK_WAIT_S, stale_after_s=RESULTS_LOCK_STALE_S):
        current = None
        if results_path(run_dir).is_file():
            try:
                current = read_results(run_dir)
            except ResultsError as exc:
                if not replace_unreadable:
                    raise
                logger.warning("replacing an unreadable results file: %s", exc)
        updated = change(current)
        updated.updated_at = _now()
        write_json_atomic(results_path(run_dir), updated.to_dict(), overwrite=True)
    return updated


def same_run(a: RunResults, b: RunResults) -> bool:
    """Whether two records describe the same run (a run replaced with output.overwrite=true is another run)."""
    return (a.run_name, a.created_at) == (b.run_name, b.created_at)


def write_results(run_dir: str | os.PathLike[str], results: RunResults) -> Path:
    """The training run's write: ``results`` replaces the record on disk, except that evaluations which `lora-ft eval`
    recorded meanwhile for this same run are kept (and added to ``results.evaluations``). Stamps ``updated_at``."""

    def keep_others_evaluations(current: RunResults | None) -> RunResults:
        if current is not None and same_run(current, results):
            results.evaluations = current.evaluations + [e for e in results.evaluations if e not in current.evaluations]
        return results

    update_results(run_dir, keep_others_evaluations, replace_unreadable=True)
    return results_path(run_dir)


def record_evaluation(run_dir: str | os.PathLike[str], evaluation: Evaluation, *, run: RunResults) -> RunResults:
    """Append ``evaluation`` to the run's results.json, next to what other writers recorded meanwhile; returns the
    record written. ``run`` is the record as the evaluation read it when it started: if the run was replaced since
    (trained again with output.overwrite=true), the evaluation belongs to no run on disk and :class:`ResultsError`
    says so. Status becomes ``evaluated`` once training has finished (a run still training, or failed, keeps its
    status: its evaluations are of epoch checkpoints)."""

    def append(current: RunResults | None) -> RunResults:
        if current is None or not same_run(current, run):
            raise ResultsError(
                f"{results_path(run_dir)} no longer describes the run that was evaluated (it was replaced or removed "
                f"while decoding); the predictions are in {run_dir}/{evaluation.predictions_file}, evaluate again"
            )
        current.add_evaluation(evaluation)
        if current.status in ("trained", "evaluated"):
            current.status = "evaluated"
        return current

    return update_results(run_dir, append)


def read_results(run_dir: str | os.PathLike[str]) -> RunResults:
    """Read ``<run_dir>/results.json``; :class:`ResultsError` says what is wrong if it cannot."""
    path = results_path(run_dir)
    if not path.is_file():
        raise ResultsError(f"{path}: no results file (is {run_dir} a lora-ft run directory? has the run started?)")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # -sig: a file saved by an editor with a byte-order mark
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc}); the file is corrupt") from exc
    except ValueError as exc:  # a number of more than 4,300 digits: Python refuses to convert it (no JSONDecodeError)
        reason = str(exc).split(";")[0]  # without the advice to raise Python's limit: no run writes such a number
        raise ResultsError(f"{path}: cannot be read ({reason}); the file is damaged") from exc
    try:
        return RunResults.from_dict(data)
    except (ResultsError, TypeError) as exc:
        raise ResultsError(f"{path}: {exc}") from exc


def _json_safe(obj: Any) -> Any:
    """Recursively replace non-finite floats by None and paths by strings; reject anything else odd."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be strings, got {key!r}")
            out[key] = _json_safe(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _json_safe(dataclasses.asdict(obj))
    # numpy / torch scalars: use their Python value rather than failing.
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return _json_safe(obj.item())
        except (TypeError, ValueError):
            pass
    raise TypeError(f"cannot write a {type(obj).__name__} to JSON; convert it to a plain number, string, list or dict")


def write_text_atomic(path: str | os.PathLike[str], text: str, *, overwrite: bool = False) -> Path:
    """Write UTF-8 text atomically (see :func:`write_bytes_atomic`)."""
    return write_bytes_atomic(path, text.encode("utf-8"), overwrite=overwrite)


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, overwrite: bool = False) -> Path:
    """Write ``obj`` as strict, indented JSON atomically (see :func:`write_bytes_atomic`)."""
    text = json.dumps(_json_safe(obj), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return write_text_atomic(path, text, overwrite=overwrite)


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(source_dir: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(source_dir), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _detect_device() -> str | None:
    try:
        import torch  # imported here: reading results must not need torch
    except ImportError:
        return None
    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def collect_environment(device: str | None = None) -> dict[str, Any]:
    """Package versions, lora-ft's git commit, Python, platform and device, for ``RunResults.environment``.

    ``versions`` maps each of :data:`TRACKED_PACKAGES` to its installed version (None if absent).
    ``git_commit`` is the commit of the lora-ft source tree (None outside a git checkout or before
    the first commit); ``git_dirty`` says whether that tree had uncommitted changes.
    ``device`` defaults to what torch sees (``"cpu"``, ``"cuda: <name> xN"``, ``"mps"``).
    """
    source_dir = Path(__file__).resolve().parent
    commit = _git(source_dir, "rev-parse", "HEAD")
    dirty = None
    if commit is not None:
        status = _git(source_dir, "status", "--porcelain", "--untracked-files=no", "--", ".")
        dirty = None if status is None else bool(status)
    return {
        "versions": {name: _package_version(name) for name in TRACKED_PACKAGES},
        "git_commit": commit,
        "git_dirty": dirty,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device if device is not None else _detect_device(),
    }
