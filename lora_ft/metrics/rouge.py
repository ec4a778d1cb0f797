"""SAMSum scoring: ROUGE-1/2/L F-measure with Google's ``rouge_score`` (stemming on), mean over examples, × 100."""

from __future__ import annotations

from collections.abc import Sequence

from rouge_score import rouge_scorer

__all__ = ["score_rouge"]

# rouge_score's names and the names reported (as in the LoRA paper's Table 4).
_METRICS = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}


def score_rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F-measure × 100 of ``predictions`` against one reference each.

    ``RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)`` called directly: ``evaluate.load("rouge")``
    wraps the same library but downloads its script from the hub and, by default, aggregates by bootstrap.
    """
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("predictions and references must be sequences of strings, not a single string")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references: one reference each")
    if len(predictions) == 0:
        raise ValueError("nothing to score: no predictions")
    for index, (prediction, reference) in enumerate(zip(predictions, references)):
        if not isinstance(prediction, str) or not isinstance(reference, str):
            raise TypeError(f"example {index}: prediction and reference must be strings (one reference per example)")
    scorer = rouge_scorer.RougeScorer(list(_METRICS), use_stemmer=True)
    totals = dict.fromkeys(_METRICS, 0.0)
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(reference, prediction)  # score(target, prediction)
        for key in _METRICS:
            totals[key] += scores[key].fmeasure
    return {name: 100.0 * totals[key] / len(predictions) for key, name in _METRICS.items()}
