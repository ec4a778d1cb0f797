"""SAMSum ROUGE: Google's rouge_score, stemming on, mean F-measure x 100."""

from __future__ import annotations

import pytest
from rouge_score import rouge_scorer

from lora_ft.metrics.rouge import score_rouge

# Synthetic dialogue summaries (SAMSum's own text is not redistributed).
PREDICTIONS = ["the cat sat", "Dogs running in the park.", "Amanda will bring cookies tomorrow"]
REFERENCES = ["the cat sat on the mat", "the dog runs", "Amanda baked cookies and will bring Jerry some tomorrow"]


def test_hand_computed() -> None:
    # 1) "the cat sat" vs "the cat sat on the mat": unigrams P 3/3, R 3/6 -> F 2/3; bigrams P 2/2, R 2/5 -> F 4/7;
    #    LCS 3 -> F 2/3.
    # 2) stemmed "dog run in the park" vs "the dog run": unigrams 3 common, P 3/5, R 3/3 -> F 3/4; bigram "dog run"
    #    P 1/4, R 1/2 -> F 1/3; LCS "dog run" 2 -> P 2/5, R 2/3 -> F 1/2.
    scores = score_rouge(PREDICTIONS[:2], REFERENCES[:2])
    assert scores["ROUGE-1"] == pytest.approx(100 * (2 / 3 + 3 / 4) / 2)
    assert scores["ROUGE-2"] == pytest.approx(100 * (4 / 7 + 1 / 3) / 2)
    assert scores["ROUGE-L"] == pytest.approx(100 * (2 / 3 + 1 / 2) / 2)


def test_same_as_rouge_score_directly() -> None:
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    direct = [scorer.score(ref, pred) for pred, ref in zip(PREDICTIONS, REFERENCES)]
    scores = score_rouge(PREDICTIONS, REFERENCES)
    for key, name in (("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L")):
        assert scores[name] == pytest.approx(100 * sum(d[key].fmeasure for d in direct) / len(direct))


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        score_rouge(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="one reference per example"):
        score_rouge(["a"], [["a", "b"]])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="nothing to score"):
        score_rouge([], [])
