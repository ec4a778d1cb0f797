"""Scoring prediction files without a model: `lora-ft eval --task e2e --predictions P --references R`."""

from __future__ import annotations

from pathlib import Path

from .schema import ConfigError


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

        return score_e2e(read_predictions(predictions), read_references(references), meteor=meteor)
    preds, refs = _lines(predictions), _lines(references)
    if len(preds) != len(refs):
        raise ValueError(f"{predictions} has {len(preds)} lines but {references} has {len(refs)}")
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
