"""NIST: the port of the official scorer's Python MT-Eval NIST."""

from __future__ import annotations

import math

import pytest
from nltk.translate.nist_score import corpus_nist as nltk_corpus_nist

from lora_ft.metrics.nist import corpus_nist, mteval_tokenize

BETA = -math.log(0.5) / math.log(1.5) ** 2  # mteval-v13a: penalty 0.5 at 2/3 of the reference length


def test_hand_computed_bigram_nist() -> None:
    # Reference "a b a c" (4 tokens): unigram counts a=2, b=1, c=1; bigrams ab, ba, ac once each.
    # Information: info(a) = log2(4/2) = 1, info(b) = info(c) = log2(4/1) = 2, info(ab) = log2(count(a)/count(ab)) = 1.
    # Output "a b c": unigram hits a, b, c -> 1 + 2 + 2 = 5 over 3 unigrams; bigram hit ab (bc misses) -> 1 over 2.
    # Length penalty: 3 output tokens vs 4 reference tokens -> exp(-beta * ln(3/4)^2).
    expected = (5 / 3 + 1 / 2) * math.exp(-BETA * math.log(3 / 4) ** 2)
    assert corpus_nist(["a b c"], [["a b a c"]], max_ngram=2) == pytest.approx(expected, rel=1e-12)


def test_hand_computed_no_penalty_and_case_insensitive() -> None:
    # Output as long as the reference: no penalty. Reference "x y": info(x) = info(y) = log2(2/1) = 1,
    # info(xy) = log2(count(x)/count(xy)) = 0. Output "X Y" (upper case) hits both unigrams -> 2/2, bigram -> 0/1.
    assert corpus_nist(["X Y"], [["x y"]], max_ngram=2) == pytest.approx(1.0, rel=1e-12)


def test_mteval_tokenization() -> None:
    # v13a splits ASCII punctuation except the apostrophe, a dash only after a digit, and . , unless between digits.
    assert mteval_tokenize("It's £20-25, near the U.S. 3.5 stars.") == [
        "It's", "£20", "-", "25", ",", "near", "the", "U", ".", "S", ".", "3.5", "stars", "."
    ]
    assert mteval_tokenize("") == [""]  # as the official port: one empty token


def test_official_example_value(e2e_example: tuple[list[str], list[list[str]]]) -> None:
    predictions, references = e2e_example
    assert corpus_nist(predictions, references) == pytest.approx(7.7889, abs=5e-5)  # official scorer, -p


def test_differs_from_nltk(e2e_example: tuple[list[str], list[list[str]]]) -> None:
    """nltk's corpus_nist is another NIST (metrics.md: about 1.46 lower on E2E): it must not be what we compute."""
    predictions, references = e2e_example
    ours = corpus_nist(predictions, references)
    theirs = nltk_corpus_nist(
        [[ref.lower().split() for ref in refs] for refs in references], [p.lower().split() for p in predictions], n=5
    )
    assert 0 < theirs < ours - 0.5


def test_better_output_scores_higher(e2e_example: tuple[list[str], list[list[str]]]) -> None:
    predictions, references = e2e_example
    perfect = [refs[0] for refs in references]
    truncated = [" ".join(p.split()[:3]) for p in predictions]
    assert corpus_nist(perfect, references) > corpus_nist(predictions, references) > corpus_nist(truncated, references)


def test_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 reference groups"):
        corpus_nist(["a", "b"], [["a"]])


def _tuple_counting_port(predictions: list[str], references: list[list[str]]) -> tuple[float, float]:
    """(BLEU, NIST) counted as pymteval counts them: tuples of lower-cased tokens in dicts filled in text order,
    NIST's information sums per segment in order of first occurrence. The array code must equal this exactly."""
    max_n = 5
    ref_ngrams: list[dict] = [{} for _ in range(max_n + 1)]
    hit_ngrams: list[list[dict]] = [[] for _ in range(max_n)]
    bleu_hits, cand_lens, ref_len, avg_ref_len = [0] * max_n, [0] * max_n, 0, 0.0
    for prediction, refs in zip(predictions, references):
        pred = [t.lower() for t in mteval_tokenize(prediction)]
        toks = [[t.lower() for t in mteval_tokenize(ref)] for ref in refs]
        for n in range(1, max_n + 1):
            merged: dict = {}
            for tokens in toks:
                counts: dict = {}
                for gram in zip(*[tokens[i:] for i in range(n)]):
                    counts[gram] = counts.get(gram, 0) + 1
                    ref_ngrams[n][gram] = ref_ngrams[n].get(gram, 0) + 1
                for gram, count in counts.items():
                    merged[gram] = max(merged.get(gram, 0), count)
            own: dict = {}
            for gram in zip(*[pred[i:] for i in range(n)]):
                own[gram] = own.get(gram, 0) + 1
            hits = {gram: min(count, merged.get(gram, 0)) for gram, count in own.items() if merged.get(gram, 0)}
            hit_ngrams[n - 1].append(hits)
            bleu_hits[n - 1] += sum(hits.values())
            cand_lens[n - 1] += len(pred) - n + 1
        ref_len += len(min(toks, key=lambda ref: (abs(len(ref) - len(pred)), len(ref))))
        total = sum(len(tokens) for tokens in toks)
        ref_ngrams[0][()] = ref_ngrams[0].get((), 0) + total
        avg_ref_len += total / float(len(toks))
    precision = sum(math.log(max(h, 1e-15) / max(c, 1e-9)) for h, c in zip(bleu_hits[:4], cand_lens[:4]))
    bleu = (math.exp(1.0 - ref_len / (cand_lens[0] or 1e-5)) if cand_lens[0] <= ref_len else 1.0) * math.exp(precision / 4)
    hit_infos = [0.0] * max_n
    for n in range(max_n):
        for hits in hit_ngrams[n]:
            hit_infos[n] += sum(
                math.log(ref_ngrams[n][gram[:-1]] / float(ref_ngrams[n + 1][gram]), 2) * count for gram, count in hits.items()
            )
    nist_sum = sum(info / total for info, total in zip(hit_infos, cand_lens) if total != 0)
    ratio = cand_lens[0] / avg_ref_len
    penalty = 1.0 if ratio >= 1 else 0.0 if ratio <= 0 else math.exp(-BETA * math.log(ratio) ** 2)
    return bleu, penalty * nist_sum


def test_array_counting_equals_the_tuple_counting_port_exactly(e2e_test_set, e2e_example) -> None:
    """BLEU and NIST from integer n-gram ids (lora_ft/metrics/ngrams.py) are the tuple-and-dict numbers, bit for bit."""
    from lora_ft.metrics.e2e import _bleu

    references = e2e_test_set[1][:200]
    outputs = [refs[-1] if i % 3 == 0 else " ".join(refs[0].split()[: i % 11]) for i, refs in enumerate(references)]
    cases = [
        (outputs, references),
        e2e_example,
        (["", "a", "a a a b", "The pub is cheap .", "x y z"], [["a b"], ["a a"], ["a a b b", "b a a a"], ["the pub"], ["q"]]),
    ]
    for predictions, refs in cases:
        assert (_bleu(predictions, refs), corpus_nist(predictions, refs)) == _tuple_counting_port(predictions, refs)
