"""The bit-parallel ROUGE-L equals pycocoevalcap's ``Rouge`` (the scorer the official E2E script calls)."""

from __future__ import annotations

import random

from pycocoevalcap.rouge.rouge import Rouge, my_lcs

from lora_ft.metrics.rouge_l import corpus_rouge_l, lcs_length


def test_lcs_equals_the_dynamic_programme_on_random_sequences() -> None:
    rng = random.Random(0)
    for _ in range(500):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 70))]
        b = [rng.choice("abcdef") for _ in range(rng.randint(0, 70))]
        assert lcs_length(a, b) == my_lcs(a, b) == lcs_length(b, a)


def test_e2e_test_set_and_corner_cases(tokenized_e2e_references: list[list[str]]) -> None:
    groups = tokenized_e2e_references
    hypotheses = [" ".join(refs[0].split()[: 3 + i % 9]) for i, refs in enumerate(groups)]
    hypotheses[:3] = ["", "zzz", groups[2][1]]
    gts = {i: refs for i, refs in enumerate(groups)}
    res = {i: [hyp] for i, hyp in enumerate(hypotheses)}
    assert corpus_rouge_l(hypotheses, groups) == float(Rouge().compute_score(gts, res)[0])
