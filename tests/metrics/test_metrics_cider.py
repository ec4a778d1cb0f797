"""The array CIDEr-D equals pycocoevalcap's ``Cider`` (the scorer the official E2E script calls)."""

from __future__ import annotations

import pytest
from pycocoevalcap.cider.cider import Cider

from lora_ft.metrics.cider import corpus_cider


def coco_cider(hypotheses: list[str], references: list[list[str]]) -> float:
    gts = {i: list(refs) for i, refs in enumerate(references)}
    res = {i: [hyp] for i, hyp in enumerate(hypotheses)}
    return float(Cider().compute_score(gts, res)[0])


def test_hand_made_corner_cases() -> None:
    hypotheses = ["a b c d e", "", "x", "a a a b", "q r s"]
    references = [["a b c d e", "a b c"], ["a"], ["x", "x y", ""], ["a a b b", "b a"], ["a b", "c d"]]
    assert corpus_cider(hypotheses, references) == pytest.approx(coco_cider(hypotheses, references), rel=1e-12)


def test_e2e_test_set(tokenized_e2e_references: list[list[str]]) -> None:
    groups = tokenized_e2e_references
    # outputs: a shortened first reference, a reference of another MR, and a perfect one, in turn
    hypotheses = [
        [" ".join(refs[0].split()[:7]), groups[(i + 1) % len(groups)][0], refs[-1]][i % 3]
        for i, refs in enumerate(groups)
    ]
    assert corpus_cider(hypotheses, groups) == pytest.approx(coco_cider(hypotheses, groups), rel=1e-12)
