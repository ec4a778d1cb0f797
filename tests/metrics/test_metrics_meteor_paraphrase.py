"""METEOR with the paraphrase table cut to the scored words equals METEOR with the full table."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
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


def _random_table(path: Path, seed: int) -> list[tuple[str, str]]:
    import random

    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(40)]
    phrases = [" ".join(rng.choice(vocabulary[: rng.randint(1, 40)]) for _ in range(rng.randint(0, 4))) for _ in range(300)]
    entries = [(rng.choice(phrases), rng.choice(phrases)) for _ in range(1000)]
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("".join(f"0.5\n{a}\n{b}\n" for a, b in entries))
    return entries


def test_cut_equals_a_direct_filter_of_the_table(tmp_path: Path) -> None:
    """The cut looks only at phrases whose rarest word is known; it must keep what a plain check of every entry keeps."""
    import random

    table = tmp_path / "paraphrase.gz"
    entries = _random_table(table, 0)
    index = ParaphraseIndex.build(table)
    rng = random.Random(1)
    for _ in range(30):
        hyp = {f"w{i}" for i in range(40) if rng.random() < 0.5}
        ref = {f"w{i}" for i in range(40) if rng.random() < 0.7}
        made_of = lambda phrase, words: set(phrase.split()) <= words  # noqa: E731
        expected = [(a, b) for a, b in entries if (made_of(a, hyp) and made_of(b, ref)) or (made_of(a, ref) and made_of(b, hyp))]
        data, count = index.filtered(hyp, ref)
        lines = gzip.decompress(data).decode("utf-8").split("\n")
        assert count == len(expected)
        assert list(zip(lines[1::3], lines[2::3])) == expected


def test_index_cached_memory_mapped_rebuilt_when_damaged_and_kept_in_memory_when_unwritable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = tmp_path / "paraphrase.gz"
    _random_table(table, 2)
    words = ({"w1", "w2", "w3"}, {"w1", "w2", "w5", "w7"})
    expected = ParaphraseIndex.build(table).filtered(*words)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert ParaphraseIndex.for_table(table).filtered(*words) == expected  # built and cached
    [folder] = (tmp_path / "cache" / "lora-ft").iterdir()
    cached = ParaphraseIndex.for_table(table)
    assert isinstance(cached.entries, np.memmap)  # read from the cache, memory-mapped
    assert cached.filtered(*words) == expected
    (folder / "entries.npy").write_bytes(b"damaged")
    assert ParaphraseIndex.for_table(table).filtered(*words) == expected  # rebuilt
    assert isinstance(ParaphraseIndex.for_table(table).entries, np.memmap)
    (tmp_path / "unwritable").write_text("a file, not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "unwritable"))
    assert ParaphraseIndex.for_table(table).filtered(*words) == expected  # in memory only


def test_caching_the_index_removes_its_earlier_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = tmp_path / "paraphrase.gz"
    _random_table(table, 3)
    stat = table.stat()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "lora-ft"
    folder.mkdir(parents=True)
    stale = folder / f"meteor-paraphrase-v1-{stat.st_size}-{stat.st_mtime_ns}.npz"
    other = folder / "meteor-paraphrase-v1-1-2.npz"  # another table's: kept
    stale.write_bytes(b"old")
    other.write_bytes(b"old")
    ParaphraseIndex.for_table(table)
    assert not stale.exists() and other.exists()
