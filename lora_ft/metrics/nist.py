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
from collections import Counter
from collections.abc import Sequence

__all__ = ["mteval_tokenize", "lowercase_tokens", "ReferenceCounts", "corpus_nist", "nist_of_tokens"]

# mteval-v13a.pl's beta, chosen so that the penalty is 0.5 when the output is 2/3 of the reference length.
_BETA = -math.log(0.5) / math.log(1.5) ** 2

_Ngram = tuple[str, ...]


_MTEVAL_RULES = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # period and comma unless followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash after a digit
    (re.compile(r"\s+"), " "),
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
    sentence = " " + sentence + " "
    for pattern, replacement in _MTEVAL_RULES:
        sentence = pattern.sub(replacement, sentence)
    return sentence.strip().split(" ")


def _ngrams(n: int, tokens: list[str]) -> list[_Ngram]:
    return list(zip(*[tokens[i:] for i in range(n)]))


def lowercase_tokens(sentence: str) -> list[str]:
    """MT-Eval v13a tokens, lower-cased (the official scorer's BLEU and NIST are both case-insensitive)."""
    return [token.lower() for token in mteval_tokenize(sentence)]


class ReferenceCounts:
    """The n-gram counts (n = 1..max_ngram) of one segment's tokenised references, shared by BLEU and NIST.

    ``per_reference``: a Counter per reference; ``clip``: each n-gram's highest count in any one reference.
    """

    def __init__(self, references: Sequence[list[str]], max_ngram: int) -> None:
        self.lengths = [len(tokens) for tokens in references]
        self.per_reference: list[Counter[_Ngram]] = []
        self.clip: dict[_Ngram, int] = {}
        for tokens in references:
            counts = Counter([ngram for n in range(1, max_ngram + 1) for ngram in _ngrams(n, tokens)])
            self.per_reference.append(counts)
            clip = self.clip
            for ngram, count in counts.items():
                if count > clip.get(ngram, 0):
                    clip[ngram] = count


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
    counts = [ReferenceCounts([lowercase_tokens(ref) for ref in refs], max_ngram) for refs in references]
    return nist_of_tokens(outputs, counts, max_ngram)


def nist_of_tokens(outputs: Sequence[list[str]], references: Sequence[ReferenceCounts], max_ngram: int = 5) -> float:
    """:func:`corpus_nist` on lower-cased tokens and reference counts made with the same ``max_ngram``."""
    # every reference n-gram (n = 1..max_ngram) over the whole corpus, counted in C rather than by Counter.update
    ref_totals: Counter[_Ngram] = Counter()
    for segment in references:
        for counts in segment.per_reference:
            ref_totals.update(counts.elements())
    ref_token_total = sum(sum(segment.lengths) for segment in references)  # the "0-gram" count
    hit_ngrams: list[list[dict[_Ngram, int]]] = [[] for _ in range(max_ngram)]
    cand_lens: list[list[int]] = [[] for _ in range(max_ngram)]
    avg_ref_len = 0.0
    for pred_tokens, segment in zip(outputs, references):
        avg_ref_len += sum(segment.lengths) / float(len(segment.lengths))  # per-segment average, summed in order
        clip = segment.clip
        for n in range(max_ngram):
            cand_lens[n].append(len(pred_tokens) - n)
            pred_counts: dict[_Ngram, int] = {}  # in order of first occurrence, as the original's dict
            for ngram in _ngrams(n + 1, pred_tokens):
                pred_counts[ngram] = pred_counts.get(ngram, 0) + 1
            hits: dict[_Ngram, int] = {}
            for ngram, count in pred_counts.items():
                # Clipped by the highest count of the n-gram in any one reference.
                matched = min(count, clip.get(ngram, 0))
                if matched:
                    hits[ngram] = matched
            hit_ngrams[n].append(hits)

    def info(ngram: _Ngram) -> float:
        """Information weight: log2(count of the (n-1)-gram prefix / count of the n-gram) in the references."""
        count = ref_totals.get(ngram, 0)
        if count == 0:
            return 0.0
        prefix_count = ref_token_total if len(ngram) == 1 else ref_totals[ngram[:-1]]
        return math.log(prefix_count / float(count), 2)

    hit_infos = [0.0] * max_ngram
    for n in range(max_ngram):
        for hits in hit_ngrams[n]:
            hit_infos[n] += sum(info(ngram) * count for ngram, count in hits.items())
    total_lens = [sum(cand_lens[n]) for n in range(max_ngram)]
    # The original divides by zero when an order has no n-grams at all; count that order as contributing 0.
    nist_sum = sum(hit_info / total_len for hit_info, total_len in zip(hit_infos, total_lens) if total_len != 0)
    return _length_penalty(sum(cand_lens[0]), avg_ref_len) * nist_sum


def _length_penalty(sys_len: float, avg_ref_len: float) -> float:
    """exp(-beta * log(ratio)^2) for outputs shorter than the references, else 1 (0 for no output)."""
    ratio = sys_len / float(avg_ref_len)
    if ratio >= 1:
        return 1.0
    if ratio <= 0:
        return 0.0
    return math.exp(-_BETA * math.log(ratio) ** 2)
