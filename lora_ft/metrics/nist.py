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
from collections import defaultdict
from collections.abc import Sequence

__all__ = ["mteval_tokenize", "corpus_nist"]

# mteval-v13a.pl's beta, chosen so that the penalty is 0.5 when the output is 2/3 of the reference length.
_BETA = -math.log(0.5) / math.log(1.5) ** 2

_Ngram = tuple[str, ...]


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
    sentence = re.sub(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])", r" \1 ", sentence)  # punctuation
    sentence = re.sub(r"([^0-9])([\.,])", r"\1 \2 ", sentence)  # period/comma unless preceded by a digit
    sentence = re.sub(r"([\.,])([^0-9])", r" \1 \2", sentence)  # period/comma unless followed by a digit
    sentence = re.sub(r"([0-9])(-)", r"\1 \2 ", sentence)  # dash after a digit
    sentence = re.sub(r"\s+", " ", sentence).strip()
    return sentence.split(" ")


def _ngrams(n: int, tokens: list[str]) -> list[_Ngram]:
    return list(zip(*[tokens[i:] for i in range(n)]))


def _max_counts(n: int, sentences: list[list[str]]) -> dict[_Ngram, int]:
    """Each n-gram's highest count in any one of the sentences (insertion order as in the original)."""
    merged: dict[_Ngram, int] = {}
    for sentence in sentences:
        counts: dict[_Ngram, int] = defaultdict(int)
        for ngram in _ngrams(n, sentence):
            counts[ngram] += 1
        for ngram, count in counts.items():
            merged[ngram] = max(merged.get(ngram, 0), count)
    return merged


def corpus_nist(predictions: Sequence[str], references: Sequence[Sequence[str]], max_ngram: int = 5) -> float:
    """Corpus NIST of ``predictions`` (one string per segment) against ``references`` (strings per segment).

    Matches ``NISTScore`` of the official scorer's ``-p`` mode, including the order of the floating-point sums.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference groups")
    ref_ngrams: list[dict[_Ngram, int]] = [defaultdict(int) for _ in range(max_ngram + 1)]  # index 0: 0-grams
    hit_ngrams: list[list[dict[_Ngram, int]]] = [[] for _ in range(max_ngram)]
    cand_lens: list[list[int]] = [[] for _ in range(max_ngram)]
    avg_ref_len = 0.0
    for prediction, refs in zip(predictions, references):
        if len(refs) == 0:
            raise ValueError("every segment needs at least one reference")
        # Lower-cased up front; the original lower-cases inside its n-gram function, which is the same.
        pred_tokens = [tok.lower() for tok in mteval_tokenize(prediction)]
        ref_tokens = [[tok.lower() for tok in mteval_tokenize(ref)] for ref in refs]
        for n in range(max_ngram):
            cand_lens[n].append(len(pred_tokens) - n)
            merged_ref = _max_counts(n + 1, ref_tokens)
            pred_counts = _max_counts(n + 1, [pred_tokens])
            hits: dict[_Ngram, int] = {}
            for ngram, count in pred_counts.items():
                matched = min(count, merged_ref.get(ngram, 0))
                if matched:
                    hits[ngram] = matched
            hit_ngrams[n].append(hits)
            for ref in ref_tokens:
                for ngram in _ngrams(n + 1, ref):
                    ref_ngrams[n + 1][ngram] += 1
        ref_len_sum = sum(len(ref) for ref in ref_tokens)
        ref_ngrams[0][()] += ref_len_sum
        avg_ref_len += ref_len_sum / float(len(ref_tokens))

    def info(ngram: _Ngram) -> float:
        """Information weight: log2(count of the (n-1)-gram prefix / count of the n-gram) in the references."""
        if ngram not in ref_ngrams[len(ngram)]:
            return 0.0
        return math.log(ref_ngrams[len(ngram) - 1][ngram[:-1]] / float(ref_ngrams[len(ngram)][ngram]), 2)

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
