"""Plain accuracy (MNLI): the share of predictions equal to their label, × 100."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["accuracy"]


def accuracy(predictions: Sequence[Any], labels: Sequence[Any]) -> float:
    """Percentage of positions where ``predictions[i] == labels[i]`` (labels as ids or words, compared as given)."""
    if isinstance(predictions, str) or isinstance(labels, str):
        raise TypeError("predictions and labels must be sequences, not a single string")
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels: one label per prediction")
    if len(labels) == 0:
        raise ValueError("nothing to score: no predictions")
    correct = sum(1 for prediction, label in zip(predictions, labels) if prediction == label)
    return 100.0 * correct / len(labels)
