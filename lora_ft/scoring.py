"""Scoring prediction files without a model: `lora-ft eval --task e2e --predictions P --references R`."""

from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .schema import ConfigError


class PredictionsFileError(UserError, ValueError):
    """A predictions file does not hold one line per evaluation item."""


def _check_count(predictions, n_predictions: int, references, n_items: int, unit: str) -> None:
    if n_predictions != n_items:
        raise PredictionsFileError(
            f"{predictions} has {n_predictions} lines but {references} has {n_items} {unit}; a predictions file holds "
            "exactly one prediction per line (lora-ft writes line breaks inside a prediction as \\n)"
        )


def _lines(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return path.read_text(encoding="utf-8").splitlines()


def score_files(task: str, predictions: str | Path, references: str | Path, *, meteor: bool = True) -> dict[str, float]:
    """E2E: references in the official scorer's format (groups separated by blank lines), one prediction per group.
    SAMSum: one reference per line. MNLI: one gold label word per line."""
    if task == "e2e":
        from .metrics.e2e import read_predictions, read_references, score_e2e

        preds, groups = read_predictions(predictions), read_references(references)
        _check_count(predictions, len(preds), references, len(groups), "reference groups")
        return score_e2e(preds, groups, meteor=meteor)
    preds, refs = _lines(predictions), _lines(references)
    _check_count(predictions, len(preds), references, len(refs), "references")
    if task == "samsum":
        from .metrics.rouge import score_rouge

        return score_rouge(preds, refs)
    if task == "mnli":
        from .metrics.accuracy import accuracy

        return {"accuracy": accuracy([p.strip() for p in preds], [r.strip() for r in refs])}
    raise ConfigError(
        f"--task {task!r}: file scoring supports e2e, samsum and mnli "
        "(WikiSQL needs each example's table header: evaluate a run with --run instead)"
    )
