"""The array CIDEr-D equals pycocoevalcap's ``Cider`` (the scorer the official E2E script calls)."""

from __future__ import annotations

import pytest
from pycocoevalcap.cider.cider import Cider

from lora_ft.metrics.cider import corpus_cider
from lora_ft.metrics.ptb_tokenizer import coco_tokenize_batch


def coco_cider(hypotheses: list[str], references: list[list[str]]) -> float:
    gts = {i: list(refs) for i, refs in enumerate(references)}
    res = {i: [hyp] for i, hyp in enumerate(hypotheses)}
    return float(Cider().compute_score(gts, res)[0])


def test_hand_made_corner_cases() -> None:
    hypotheses = ["a b c d e", "", "x", "a a a b", "q r s"]
    references = [["a b c d e", "a b c"], ["a"], ["x", "x y", ""], ["a a b b", "b a"], ["a b", "c d"]]
    assert corpus_cider(hypotheses, references) == pytest.approx(coco_cider(hypotheses, references), rel=1e-12)


def test_e2e_test_set(e2e_test_set: tuple[list[str], list[list[str]]]) -> None:
    _, references = e2e_test_set
    references = references[:300]
    flat = coco_tokenize_batch([ref for refs in references for ref in refs])
    groups, start = [], 0
    for refs in references:
        groups.append(flat[start : start + len(refs)])
        start += len(refs)
    # outputs: a shortened first reference, a reference of another MR, and a perfect one, in turn
    hypotheses = [
        [" ".join(refs[0].split()[:7]), groups[(i + 1) % len(groups)][0], refs[-1]][i % 3]
        for i, refs in enumerate(groups)
    ]
    assert corpus_cider(hypotheses, groups) == pytest.approx(coco_cider(hypotheses, groups), rel=1e-12)
