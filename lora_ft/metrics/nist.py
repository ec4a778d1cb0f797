"""NIST-5 exactly as the official E2E scorer's Python MT-Eval port computes it (``measure_scores.py -p``).

A port of ``NISTScore`` in tuetschek/e2e-metrics ``metrics/pymteval.py``: case-insensitive n-grams up to 5 over
MT-Eval v13a tokens, information weights from the n-gram counts of all references of the scored set, and a brevity
penalty from the summed per-segment *average* reference length (the Perl script uses a different reference length;
the paper's authors used the Python port). No library computes this: nltk's ``corpus_nist`` weights and penalises
differently (about 1.5 lower on E2E). Corner cases are kept as the original has them, since official numbers are
the goal: an empty output counts as one empty token, and a short output adds a negative count to the n-gram
totals of the orders it is too short for.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from lora_ft.metrics.ngrams import Occurrences, distinct_per_sentence, ngram_occurrences, runs

__all__ = ["mteval_tokenize", "lowercase_tokens", "NgramMatches", "corpus_nist", "nist_of_matches"]

# mteval-v13a.pl's beta, chosen so that the penalty is 0.5 when the output is 2/3 of the reference length.
_BETA = -math.log(0.5) / math.log(1.5) ** 2

# mteval-v13a's first rule puts spaces around each of these characters (every ASCII punctuation character but
# ' , - . and the space itself): as one translate rather than a regular expression substitution per character.
_SPACED_PUNCTUATION = str.maketrans({char: f" {char} " for char in " !\"#$%&()*+/:;<=>?@[\\]^_`{|}~"})
_MTEVAL_RULES = [
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # period and comma unless followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash after a digit
]


def mteval_tokenize(sentence: str) -> list[str]:
    """MT-Eval v13a tokenisation exactly as pymteval's ``NGramScore.tokenize`` does it.

    sacrebleu's 13a tokenizer applies the same substitutions but returns no token for an empty line, where this
    returns one empty token; the NIST port is kept byte-for-byte with the official one.
    """
    sentence = sentence.replace("<skipped>", "")
    sentence = sentence.replace("-\n", "")
    sentence = sentence.replace("\n", " ")
    sentence = sentence.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    sentence = (" " + sentence + " ").translate(_SPACED_PUNCTUATION)
    for pattern, replacement in _MTEVAL_RULES:
        sentence = pattern.sub(replacement, sentence)
    # the original then turns runs of white space (\s+) into one space and splits the stripped line at spaces
    return sentence.split() or [""]


def lowercase_tokens(sentence: str) -> list[str]:
    """MT-Eval v13a tokens, lower-cased (the official scorer's BLEU and NIST are both case-insensitive)."""
    return [token.lower() for token in mteval_tokenize(sentence)]


class NgramMatches:
    """The n-gram statistics (n = 1..max_ngram) of outputs and their references that BLEU and NIST need, counted as
    pymteval counts them: an output n-gram matches up to its highest count in any one reference of its segment.

    ``hits[n - 1]``: (segment, n-gram id, matches) of each distinct output n-gram that matches, by segment and in
    order of first occurrence in the output (the order of pymteval's dicts, which NIST's float sums follow);
    ``reference_totals[n - 1]``: each n-gram's count over all references of all segments.
    """

    def __init__(self, outputs: Sequence[list[str]], references: Sequence[Sequence[list[str]]], max_ngram: int) -> None:
        self.max_ngram = max_ngram
        self.output_lengths = [len(tokens) for tokens in outputs]
        self.reference_lengths = [[len(tokens) for tokens in refs] for refs in references]
        n_out = len(outputs)
        group_sizes = [len(refs) for refs in references]
        segment_of = np.concatenate([np.arange(n_out), np.repeat(np.arange(n_out), group_sizes)]).astype(np.int64)
        table = ngram_occurrences([*outputs, *(tokens for refs in references for tokens in refs)], max_ngram)
        self.prefixes = [occurrences.prefix for occurrences in table]
        self.reference_totals: list[np.ndarray] = []
        self.hits: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for occ in table:
            is_ref = occ.sentence >= n_out
            self.reference_totals.append(np.bincount(occ.gram[is_ref], minlength=occ.ids))
            # each reference's count of each n-gram (runs of a sorted key), then the highest per segment
            ref_keys = np.sort(occ.sentence[is_ref] * occ.ids + occ.gram[is_ref])
            starts = runs(ref_keys)
            firsts = ref_keys[starts[:-1]]
            segment_keys = segment_of[firsts // occ.ids] * occ.ids + firsts % occ.ids
            order = np.argsort(segment_keys, kind="stable")
            segment_starts = runs(segment_keys[order])
            clip_keys = np.append(segment_keys[order][segment_starts[:-1]], np.iinfo(np.int64).max)  # + sentinel
            clips = np.append(np.maximum.reduceat(np.diff(starts)[order], segment_starts[:-1]) if len(order) else [], 0)
            out = ~is_ref
            segment, gram, count, _ = distinct_per_sentence(
                Occurrences(occ.sentence[out], occ.position[out], occ.gram[out], occ.ids, occ.prefix)
            )
            keys = segment * occ.ids + gram
            where = np.searchsorted(clip_keys, keys)
            matched = np.minimum(count, np.where(clip_keys[where] == keys, clips[where], 0)).astype(np.int64)
            hit = matched > 0
            self.hits.append((segment[hit], gram[hit], matched[hit]))


def corpus_nist(predictions: Sequence[str], references: Sequence[Sequence[str]], max_ngram: int = 5) -> float:
    """Corpus NIST of ``predictions`` (one string per segment) against ``references`` (strings per segment).

    Matches ``NISTScore`` of the official scorer's ``-p`` mode, including the order of its floating-point sums
    (n-grams in order of first occurrence in each output, segments in order).
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference groups")
    if any(len(refs) == 0 for refs in references):
        raise ValueError("every segment needs at least one reference")
    outputs = [lowercase_tokens(prediction) for prediction in predictions]
    tokens = [[lowercase_tokens(ref) for ref in refs] for refs in references]
    return nist_of_matches(NgramMatches(outputs, tokens, max_ngram))


def nist_of_matches(matches: NgramMatches) -> float:
    """:func:`corpus_nist` from the outputs' and references' n-gram statistics."""
    max_ngram = matches.max_ngram
    ref_token_total = sum(sum(lengths) for lengths in matches.reference_lengths)  # the "0-gram" count
    avg_ref_len = 0.0
    for lengths in matches.reference_lengths:
        avg_ref_len += sum(lengths) / float(len(lengths))  # per-segment average, summed in order
    segments = len(matches.output_lengths)
    hit_infos = [0.0] * max_ngram
    for n in range(max_ngram):
        segment, gram, matched = matches.hits[n]
        count = matches.reference_totals[n][gram].tolist()
        if n == 0:
            prefix_count = [ref_token_total] * len(count)
        else:
            prefix_count = matches.reference_totals[n - 1][matches.prefixes[n][gram]].tolist()
        # information weight log2(count of the (n-1)-gram prefix / count of the n-gram) in the references, times
        # the matches; summed per segment and then over segments, in pymteval's order
        values = [math.log(p / float(c), 2) * m for p, c, m in zip(prefix_count, count, matched.tolist())]
        bounds = np.searchsorted(segment, np.arange(segments + 1)).tolist()
        for start, stop in zip(bounds[:-1], bounds[1:]):
            hit_infos[n] += sum(values[start:stop])
    total_lens = [sum(length - n for length in matches.output_lengths) for n in range(max_ngram)]
    # The original divides by zero when an order has no n-grams at all; count that order as contributing 0.
    nist_sum = sum(hit_info / total_len for hit_info, total_len in zip(hit_infos, total_lens) if total_len != 0)
    return _length_penalty(sum(matches.output_lengths), avg_ref_len) * nist_sum


def _length_penalty(sys_len: float, avg_ref_len: float) -> float:
    """exp(-beta * log(ratio)^2) for outputs shorter than the references, else 1 (0 for no output)."""
    ratio = sys_len / float(avg_ref_len)
    if ratio >= 1:
        return 1.0
    if ratio <= 0:
        return 0.0
    return math.exp(-_BETA * math.log(ratio) ** 2)
