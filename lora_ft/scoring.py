"""Scoring prediction files without a model: `lora-ft eval --task e2e --predictions P --references R`."""

from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .schema import ConfigError

FILE_TASKS = ("e2e", "samsum", "mnli")


class ScoringFileError(UserError, ValueError):
    """A predictions or references file is missing, unreadable, or does not pair up with the other one."""


def _text(path: str | Path, flag: str) -> str:
    """The file's UTF-8 text; anything else is one line naming the file and the flag that gave it."""
    path = Path(path)
    if path.is_dir():
        raise ScoringFileError(f"{flag} {path} is a directory; give the text file inside it")
    if not path.is_file():
        raise ScoringFileError(f"{flag} {path} does not exist")
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark is not part of the first line
    except UnicodeDecodeError as exc:
        raise ScoringFileError(f"{flag} {path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def _check_count(predictions, n_predictions: int, references, n_references: int, unit: str) -> None:
    if n_predictions == 0:
        raise ScoringFileError(f"--predictions {predictions} is empty: nothing to score")
    if n_predictions != n_references:
        raise ScoringFileError(
            f"--predictions {predictions} has {n_predictions} lines but --references {references} has {n_references} "
            f"{unit}; give exactly one prediction per line for each reference {unit.rstrip('s')}, in the same order "
            "(lora-ft writes a line break inside a prediction as \\n)"
        )


def score_files(task: str, predictions: str | Path, references: str | Path, *, meteor: bool = True) -> dict[str, float]:
    """E2E: references in the official scorer's format (groups separated by blank lines), one prediction per group.
    SAMSum: one reference per line. MNLI: one gold label word per line."""
    if task not in FILE_TASKS:  # before reading anything: the files' shapes depend on the task
        raise ConfigError(
            f"--task {task!r}: file scoring supports {', '.join(FILE_TASKS)} "
            "(WikiSQL needs each example's table header: evaluate a run with --run instead)"
        )
    pred_text, ref_text = _text(predictions, "--predictions"), _text(references, "--references")
    if task == "e2e":
        from .metrics.e2e import read_predictions, read_references, score_e2e

        # The official scorer's readers, on files just checked to be readable UTF-8.
        preds, groups = read_predictions(predictions), read_references(references)
        _check_count(predictions, len(preds), references, len(groups), "groups")
        return score_e2e(preds, groups, meteor=meteor)
    preds, refs = pred_text.splitlines(), ref_text.splitlines()
    _check_count(predictions, len(preds), references, len(refs), "lines")
    if task == "samsum":
        from .metrics.rouge import score_rouge

        return score_rouge(preds, refs)
    from .metrics.accuracy import accuracy

    return {"accuracy": accuracy([p.strip() for p in preds], [r.strip() for r in refs])}
