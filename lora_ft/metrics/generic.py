"""Scorers for a task of one's own (lora_ft/tasks/custom.py), built from the ones the paper's tasks use.

- ``bleu``: the official E2E scorer's BLEU (pymteval: case-insensitive, 4-grams, every reference of an item), × 100.
- ``exact_match``: the share of items whose prediction equals one of its references once both are normalised (lower
  case, words only: punctuation and spacing ignored), × 100.
- ``label_accuracy``: classification by the generated words, MNLI's rule generalised: the labels are the scored items'
  distinct (normalised) references; an item's predicted label is the longest label its normalised prediction starts
  with (whole words), none if it starts with no label; correct when that is one of its references. × 100.
ROUGE is :func:`lora_ft.metrics.rouge.score_rouge` (SAMSum's).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["bleu", "exact_match", "label_accuracy", "normalise"]


def normalise(text: str) -> str:
    """Lower-cased words joined by single spaces: "The answer: Paris." -> "the answer paris"."""
    return " ".join(re.findall(r"\w+", str(text).lower()))


def _check(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if isinstance(predictions, str):
        raise TypeError("predictions must be a sequence of strings, not a single string")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists: one per prediction")
    if not predictions:
        raise ValueError("nothing to score: no predictions")
    if any(not refs for refs in references):
        raise ValueError("every prediction needs at least one reference")


def bleu(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """{"BLEU": the official E2E scorer's corpus BLEU × 100} over all references of each item."""
    from .e2e import _bleu  # the scorer's own BLEU, tested against pymteval (tests/metrics)

    _check(predictions, references)
    return {"BLEU": 100.0 * _bleu(list(predictions), [list(refs) for refs in references])}


def exact_match(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """{"exact_match": × 100} (module docstring)."""
    _check(predictions, references)
    hits = sum(normalise(p) in {normalise(r) for r in refs} for p, refs in zip(predictions, references))
    return {"exact_match": 100.0 * hits / len(predictions)}


def label_accuracy(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """{"accuracy": × 100} (module docstring)."""
    _check(predictions, references)
    labels = sorted({normalise(r) for refs in references for r in refs} - {""}, key=len, reverse=True)
    correct = 0
    for prediction, refs in zip(predictions, references):
        words = normalise(prediction)
        predicted = next((label for label in labels if words == label or words.startswith(label + " ")), None)
        correct += predicted is not None and predicted in {normalise(r) for r in refs}
    return {"accuracy": 100.0 * correct / len(predictions)}
