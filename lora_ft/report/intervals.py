"""95% confidence intervals of each row's primary metric: a percentile bootstrap over the scored items, seeds pooled.

Each resample draws N item indices with replacement (N: the items the row was scored on); every seed of the row is
rescored on those same items with lora-ft's own scorers, the resample's value is the mean over the seeds, and the
interval is the 2.5th and 97.5th percentiles of RESAMPLES such values (a fixed RNG seed: a table regenerates byte for
byte). It says how much the score depends on which items happened to be scored; the spread between seeds is the ±.

Per item, each metric keeps what its corpus score is summed from, so that a resample sums rows of counts instead of
running the scorer again: E2E BLEU the item's clipped n-gram matches and candidate n-grams (n = 1..4) and its closest
reference length, put through the official formula (:func:`lora_ft.metrics.e2e.bleu_of_counts`); MNLI accuracy whether
the item is right; SAMSum ROUGE-L the item's F-measure (the score is their mean). WikiSQL's accuracy needs each item's
table header, which the predictions file does not keep: its interval is n/a.

Predictions come from the evaluation's ``predictions-<split>-<epoch>.jsonl`` (the exact prediction and references of
each item, written beside the .txt by `lora-ft eval`). The rescored full set must give the score in results.json, or
the file is not what was scored (decoded again since?) and the interval is n/a; so is one whose seeds were scored on
different items.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lora_ft.report.cells import PRIMARY_METRIC, Cell, Interval, SeedScore

RESAMPLES = 1000
BOOTSTRAP_SEED = 2021  # fixed, so that a table regenerates byte for byte
LEVEL = 0.95
_BLOCK = 200  # resamples drawn at a time: bounds the memory of a large scored set (N x block counts)
NO_PER_ITEM = {"wikisql_acc": "WikiSQL's per-item scoring needs each item's table header, which predictions files "
                              "do not keep"}


class IntervalError(ValueError):
    """A seed's predictions cannot be rescored (missing, unreadable, or not the items that were scored)."""


@dataclass(frozen=True)
class ItemCounts:
    """What each scored item adds to the sums its metric is computed from."""

    counts: np.ndarray  # (items, k)
    metric: Callable[[np.ndarray, int], float]  # (the k sums over the drawn items, how many were drawn) -> metric

    def score(self) -> float:
        """The metric on every item once: the scorer's value on the full set."""
        return self.metric(self.counts.sum(axis=0), len(self.counts))


def _mean_metric(sums: np.ndarray, n: int) -> float:
    return 100.0 * float(sums[0]) / n


def bleu_counts(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> ItemCounts:
    """E2E BLEU (the official scorer's, × 100) per item: matches and candidates of each order, closest reference length."""
    from lora_ft.metrics.e2e import BLEU_MAX_N, bleu_of_counts
    from lora_ft.metrics.nist import NgramMatches, lowercase_tokens

    outputs = [lowercase_tokens(p) for p in predictions]
    matches = NgramMatches(outputs, [[lowercase_tokens(r) for r in refs] for refs in references], BLEU_MAX_N)
    n, orders = len(outputs), BLEU_MAX_N
    counts = np.zeros((n, 2 * orders + 1), dtype=np.int64)  # integers: every sum is exact
    lengths = np.array(matches.output_lengths, dtype=np.int64)
    for order in range(orders):
        segment, _, matched = matches.hits[order]
        np.add.at(counts[:, order], segment, matched)
        counts[:, orders + order] = lengths - order  # may be <= 0: the official scorer adds it as it is
    counts[:, 2 * orders] = [min(refs, key=lambda ref: (abs(ref - length), ref))
                             for length, refs in zip(matches.output_lengths, matches.reference_lengths)]

    def metric(sums: np.ndarray, _: int) -> float:
        totals = [int(v) for v in sums]
        return 100.0 * bleu_of_counts(totals[:orders], totals[orders:2 * orders], totals[2 * orders])

    return ItemCounts(counts, metric)


def accuracy_counts(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> ItemCounts:
    """MNLI accuracy per item: 1 when the answer's label (as MNLI scores it) is the reference's label word."""
    from lora_ft.tasks.mnli import LABEL_WORDS, predicted_label

    right = []
    for index, (prediction, refs) in enumerate(zip(predictions, references)):
        if len(refs) != 1 or refs[0] not in LABEL_WORDS:
            raise IntervalError(f"item {index + 1}: reference {refs!r} is not one of the label words {LABEL_WORDS}")
        right.append(int(predicted_label(prediction) == LABEL_WORDS.index(refs[0])))
    return ItemCounts(np.array(right, dtype=np.int64).reshape(-1, 1), _mean_metric)


def rouge_l_counts(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> ItemCounts:
    """SAMSum ROUGE-L per item: its F-measure as lora_ft.metrics.rouge scores it (rouge_score, stemming on)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(refs[0], prediction)["rougeL"].fmeasure for prediction, refs in zip(predictions, references)]
    return ItemCounts(np.array(scores, dtype=np.float64).reshape(-1, 1), _mean_metric)


# Column key of each task's primary metric (cells.PRIMARY_METRIC) -> its per-item counts.
ITEM_COUNTS: dict[str, Callable[[Sequence[str], Sequence[Sequence[str]]], ItemCounts]] = {
    "bleu": bleu_counts, "mnli_acc": accuracy_counts, "samsum_rl": rouge_l_counts,
}


def read_items(score: SeedScore) -> tuple[list[str], list[tuple[str, ...]]]:
    """The predictions and references a seed's score was computed from (its evaluation's .jsonl)."""
    if not score.predictions_file:
        raise IntervalError("its evaluation names no predictions file")
    path = score.run_dir / Path(score.predictions_file).with_suffix(".jsonl")
    if not path.is_file():
        raise IntervalError(f"no {path.name} (each item's prediction and references) in its run directory")
    predictions, references = [], []
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            predictions.append(str(record["prediction"]))
            references.append(tuple(str(r) for r in record["references"]))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise IntervalError(f"{path.name} is not a predictions file ({type(exc).__name__}: {exc})") from None
    if not predictions:
        raise IntervalError(f"{path.name} is empty")
    return predictions, references


def bootstrap(per_seed: Sequence[ItemCounts], *, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED,
              level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of the mean over seeds, every seed resampled on the same items (module docstring)."""
    n = len(per_seed[0].counts)
    if any(len(s.counts) != n for s in per_seed):
        raise ValueError("every seed must have the same scored items")
    rng = np.random.default_rng(seed)
    values: list[float] = []
    for start in range(0, resamples, _BLOCK):
        block = min(_BLOCK, resamples - start)
        draws = rng.integers(0, n, size=(block, n))
        # how often each item was drawn in each resample: the weights of its counts in the resample's sums
        weights = np.bincount((draws + n * np.arange(block)[:, None]).ravel(), minlength=block * n).reshape(block, n)
        sums = [weights @ s.counts for s in per_seed]
        values.extend(math.fsum(s.metric(seed_sums[i], n) for s, seed_sums in zip(per_seed, sums)) / len(per_seed)
                      for i in range(block))
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(np.array(values), [tail, 100.0 - tail])
    return float(low), float(high)


def cell_interval(cell: Cell) -> tuple[Interval | None, str | None]:
    """The 95% interval of a primary-metric cell over its seeds, or (None, why not)."""
    if cell.column.key in NO_PER_ITEM:
        return None, NO_PER_ITEM[cell.column.key]
    count = ITEM_COUNTS[cell.column.key]
    per_seed: list[ItemCounts] = []
    scored: list[tuple[str, ...]] | None = None
    for score in cell.scores:
        try:
            predictions, references = read_items(score)
            counts = count(predictions, references)
        except IntervalError as exc:
            return None, f"{score.seed}: {exc}"
        if scored is not None and references != scored:
            return None, "its seeds were scored on different items"
        scored = references
        rescored = counts.score()
        if not math.isclose(rescored, score.value, rel_tol=1e-9, abs_tol=1e-9):
            return None, (f"{score.seed}: {score.predictions_file} rescores to {rescored:.4f}, not the "
                          f"{score.value:.4f} of results.json (decoded again since?)")
        per_seed.append(counts)
    low, high = bootstrap(per_seed)
    return Interval(low, high, len(per_seed[0].counts), len(per_seed), RESAMPLES), None


def attach_intervals(cells: Sequence[Cell]) -> None:
    """Give each primary-metric cell with a value its interval (or the reason it has none)."""
    for cell in cells:
        if cell.scores and PRIMARY_METRIC.get(cell.column.task) == cell.column.key:
            cell.interval, cell.interval_reason = cell_interval(cell)
