"""METEOR with the paraphrase table cut to the scored words equals METEOR with the full table."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from lora_ft.metrics import e2e
from lora_ft.metrics.meteor_paraphrase import ParaphraseIndex, scored_words
from lora_ft.metrics.ptb_tokenizer import coco_tokenize_batch

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")


def test_scored_words_cover_what_the_normaliser_can_split_off() -> None:
    words = scored_words(["the u.s.-based caf\u00e9's 1.5 stars", "a|b"])
    for word in ("the", "u.s.-based", "u", "s", "u.s", "u.s.", "based", "caf\u00e9", "'s", "s", "1.5", "1", "5", "a", "b", "|", "'", "-"):
        assert word in words, word


def test_cut_table_keeps_exactly_the_entries_made_of_known_words(tmp_path: Path) -> None:
    table = tmp_path / "paraphrase.gz"
    entries = [("0.5", "a b", "c"), ("0.1", "a", "d e"), ("0.2", "c", "a"), ("0.3", "", "a"), ("0.4", "b  c", "a\tb")]
    with gzip.open(table, "wt", encoding="utf-8") as handle:
        handle.write("".join(f"{p}\n{x}\n{y}\n" for p, x, y in entries))
    index = ParaphraseIndex.build(table)
    out = tmp_path / "cut.gz"
    assert index.write_filtered({"a", "b", "c"}, {"a", "b", "c"}, out) == 4
    lines = gzip.open(out, "rt", encoding="utf-8").read().split("\n")
    # file order kept; phrases as Java's StringTokenizer sees them (words joined by one space)
    assert lines[1::3][:4] == ["a b", "c", "", "b c"]
    assert lines[2::3][:4] == ["c", "a", "a", "a b"]


def _template_like(references: list[list[str]]) -> list[str]:
    # outputs that share many but not all words with the references, plus some unknown and punctuated words
    return [f"{refs[0].split('.')[0]} , zorblax n't it's 3.5 & co ." for refs in references]


@pytest.mark.slow
@needs_java
def test_meteor_cut_table_equals_full_table(e2e_test_set: tuple[list[str], list[list[str]]], e2e_example) -> None:
    _, references = e2e_test_set
    references = references[:200]
    predictions = _template_like(references)
    flat = coco_tokenize_batch([ref for refs in references for ref in refs])
    hyps = coco_tokenize_batch(predictions)
    refs, start = [], 0
    for group in references:
        refs.append(flat[start : start + len(group)])
        start += len(group)
    raw_refs = e2e_example[1]
    raw_hyps = e2e_example[0]
    try:
        cut = e2e.meteor_score(hyps, refs)
        cut_raw = e2e.meteor_score(raw_hyps, raw_refs)  # untokenised text: the normaliser does the splitting
        full = e2e.meteor_score(hyps, refs, full_table=True)
        full_raw = e2e.meteor_score(raw_hyps, raw_refs, full_table=True)
    finally:
        e2e.close_meteor()
    assert cut == full
    assert cut_raw == full_raw


def test_an_entry_is_kept_when_it_can_pair_a_hypothesis_span_with_a_reference_span(tmp_path: Path) -> None:
    table = tmp_path / "paraphrase.gz"
    with gzip.open(table, "wt", encoding="utf-8") as handle:
        handle.write("0.1\nh\nr\n0.2\nr\nh\n0.3\nh\nh\n0.4\nr\nr\n0.5\nh r\nr\n")
    out = tmp_path / "cut.gz"
    assert ParaphraseIndex.build(table).write_filtered({"h"}, {"r"}, out) == 2
    assert gzip.open(out, "rt", encoding="utf-8").read() == "0\nh\nr\n0\nr\nh\n"
