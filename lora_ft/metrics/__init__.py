"""Scorers for the four tasks, each reproducing the scorer the paper's numbers come from.

A task names its scorer by a key of :data:`METRIC_SETS`:

========== ================================================ =====================================================
key        scorer                                           returns
========== ================================================ =====================================================
e2e        :func:`lora_ft.metrics.e2e.score_e2e`            {"BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"}; BLEU,
                                                            METEOR, ROUGE_L × 100 (official E2E scorer, ``-p``)
rouge      :func:`lora_ft.metrics.rouge.score_rouge`        {"ROUGE-1", "ROUGE-2", "ROUGE-L"} × 100 (SAMSum)
wikisql_lf :func:`lora_ft.metrics.wikisql.logical_form_...` logical-form accuracy × 100 (a float)
accuracy   :func:`lora_ft.metrics.accuracy.accuracy`        accuracy × 100 (a float; MNLI)
========== ================================================ =====================================================

The scorer modules are imported on first use (:meth:`MetricSet.scorer`): the E2E one pulls in sacrebleu,
pycocoevalcap and a Java process for METEOR, which a task that only needs accuracy should not pay for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

__all__ = ["MetricSet", "METRIC_SETS", "get_metric_set"]


@dataclass(frozen=True)
class MetricSet:
    """A named scorer: where it lives, what it reports, and on what scale."""

    name: str
    module: str  # module path inside lora_ft.metrics
    function: str
    metrics: tuple[str, ...]  # keys of the returned dict, or the one name of a returned float
    description: str

    def scorer(self) -> Callable[..., Any]:
        """The scoring function (imports its module now)."""
        return getattr(import_module(f"{__name__}.{self.module}"), self.function)


METRIC_SETS: dict[str, MetricSet] = {
    "e2e": MetricSet(
        "e2e",
        "e2e",
        "score_e2e",
        ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"),
        "official E2E scorer (measure_scores.py -p): BLEU, METEOR, ROUGE_L x 100; NIST, CIDEr as is",
    ),
    "rouge": MetricSet(
        "rouge",
        "rouge",
        "score_rouge",
        ("ROUGE-1", "ROUGE-2", "ROUGE-L"),
        "rouge_score with stemming, mean F-measure x 100 (SAMSum)",
    ),
    "wikisql_lf": MetricSet(
        "wikisql_lf",
        "wikisql",
        "logical_form_accuracy",
        ("lf_accuracy",),
        "WikiSQL logical-form accuracy x 100 (generated SQL parsed with the table header)",
    ),
    "accuracy": MetricSet("accuracy", "accuracy", "accuracy", ("accuracy",), "accuracy x 100 (MNLI)"),
}


def get_metric_set(name: str) -> MetricSet:
    """The metric set called ``name``; an unknown name is an error listing the known ones."""
    try:
        return METRIC_SETS[name]
    except KeyError:
        raise KeyError(f"unknown metric set {name!r}; known: {', '.join(sorted(METRIC_SETS))}") from None
