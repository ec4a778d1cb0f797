"""N-gram counting with arrays, shared by NIST/BLEU (:mod:`lora_ft.metrics.nist`) and CIDEr (:mod:`lora_ft.metrics.cider`).

Counting n-grams as Python tuples in dicts was most of the Python time of scoring the 630 E2E test MRs (4,693
references, n up to 5). Here every n-gram gets an integer id (one sort per order), and counts, maxima and
look-ups become sorts and searches over integer keys. Integer results are exact whatever the method; where a
caller sums floats, it sums them in the order the tuple-and-dict code did (first occurrence in each sentence).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Occurrences", "ngram_occurrences", "distinct_per_sentence", "runs"]


@dataclass
class Occurrences:
    """Every occurrence of an n-gram of one order in a batch of sentences, in text order."""

    sentence: np.ndarray  # int64: which sentence
    position: np.ndarray  # int64: where it starts, counted over the whole batch (so text order sorts by it)
    gram: np.ndarray  # int64: the n-gram's id among this order's n-grams (0 .. ids - 1)
    ids: int  # how many distinct n-grams of this order there are
    prefix: np.ndarray  # int64 per id: the id of its (n-1)-gram prefix (order 1: the word id)


def runs(sorted_keys: np.ndarray) -> np.ndarray:
    """Where each run of equal values starts in a sorted array (plus its length at the end)."""
    if len(sorted_keys) == 0:
        return np.zeros(1, dtype=np.int64)
    change = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    return np.concatenate([[0], change, [len(sorted_keys)]]).astype(np.int64)


def _dense_ids(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each code's rank among the distinct codes, and the distinct codes (sorted)."""
    order = np.argsort(codes, kind="stable")
    starts = runs(codes[order])
    ids = np.empty(len(codes), dtype=np.int64)
    ids[order] = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
    return ids, codes[order[starts[:-1]]]


def ngram_occurrences(sentences: Sequence[Sequence[str]], max_n: int) -> list[Occurrences]:
    """For n = 1 .. max_n, every n-gram occurrence of ``sentences`` (token lists); two n-grams of an order get the
    same id exactly when their tokens are equal."""
    vocabulary: dict[str, int] = {}
    words = np.fromiter(
        (vocabulary.setdefault(token, len(vocabulary)) for sentence in sentences for token in sentence),
        dtype=np.int64,
    )
    lengths = np.fromiter((len(sentence) for sentence in sentences), dtype=np.int64, count=len(sentences))
    sentence_of = np.repeat(np.arange(len(sentences), dtype=np.int64), lengths)
    # tokens from each position to the end of its sentence
    remaining = np.repeat(np.cumsum(lengths), lengths) - np.arange(len(words))
    out: list[Occurrences] = []
    grams = words  # the id of the n-gram starting at each position (meaningful where it fits)
    ids = len(vocabulary)
    for n in range(1, max_n + 1):
        fits = np.flatnonzero(remaining >= n)
        if n == 1:
            prefix = np.arange(ids, dtype=np.int64)
        else:
            # the n-gram at p: the (n-1)-gram at p, then the word at p + n - 1
            codes = grams[fits] * (len(vocabulary) + 1) + words[fits + n - 1]
            dense, distinct = _dense_ids(codes)
            grams = np.full(len(words), -1, dtype=np.int64)
            grams[fits] = dense
            ids = len(distinct)
            prefix = distinct // (len(vocabulary) + 1)
        out.append(Occurrences(sentence_of[fits], fits, grams[fits], ids, prefix))
    return out


def distinct_per_sentence(occurrences: Occurrences) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each sentence's distinct n-grams with their counts: (sentence, gram, count, first position), sorted by first
    position (so by sentence, then in order of first occurrence, as a dict filled in text order iterates)."""
    keys = occurrences.sentence * occurrences.ids + occurrences.gram
    order = np.argsort(keys, kind="stable")  # stable: each run starts at the n-gram's first occurrence
    starts = runs(keys[order])
    first = order[starts[:-1]]
    by_position = np.argsort(occurrences.position[first], kind="stable")
    first = first[by_position]
    counts = np.diff(starts)[by_position]
    return occurrences.sentence[first], occurrences.gram[first], counts, occurrences.position[first]
