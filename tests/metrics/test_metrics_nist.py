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
