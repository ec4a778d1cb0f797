"""Accuracy and the registry of metric sets."""

from __future__ import annotations

import pytest

from lora_ft.metrics import METRIC_SETS, get_metric_set
from lora_ft.metrics.accuracy import accuracy


def test_accuracy() -> None:
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 75.0
    assert accuracy(["entailment", "neutral"], ["entailment", "contradiction"]) == 50.0
    with pytest.raises(ValueError, match="3 predictions but 2 labels"):
        accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="nothing to score"):
        accuracy([], [])


def test_registry_resolves_every_scorer() -> None:
    assert set(METRIC_SETS) == {"e2e", "rouge", "wikisql_lf", "accuracy"}
    assert get_metric_set("accuracy").scorer()([1, 2], [1, 3]) == 50.0
    assert list(get_metric_set("rouge").scorer()(["a b"], ["a b"])) == list(get_metric_set("rouge").metrics)
    assert get_metric_set("e2e").scorer().__name__ == "score_e2e"
    assert get_metric_set("wikisql_lf").scorer().__name__ == "logical_form_accuracy"
    with pytest.raises(KeyError, match="known: accuracy, e2e, rouge, wikisql_lf"):
        get_metric_set("bleu")
