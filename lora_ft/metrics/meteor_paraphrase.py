"""METEOR's paraphrase table cut down to the words of the text being scored, so that Java starts in a second.

METEOR 1.5 spends most of its start-up (about 10 s of CPU) reading ``paraphrase-en.gz``: 5.3 million entries of
three lines each. Its reader (``edu.cmu.meteor.aligner.ParaphraseTransducer``, read in the jar's bytecode) ignores
an entry's first line (a probability), splits the other two into words with ``StringTokenizer``, puts the first
phrase into a trie keyed by word ids and keeps the second in a list, in file order. The paraphrase matcher only
walks that trie along the words of a hypothesis and compares the second phrase, word by word, with the words of
a reference; it never iterates a table. So an entry with a word that occurs nowhere in the scored text can never
match, and a file without such entries, the others kept in their order, gives METEOR the same matches and the
same scores. The word set used here is a superset of what METEOR's ``-norm`` normaliser can make of the text
(every whitespace token, every run of letters and digits in it, every punctuation character, and every
concatenation of neighbouring pieces). ``tests/metrics/test_metrics_meteor_paraphrase.py`` checks scores with
the full and the cut table are equal.

The full table is parsed once into a compact index (word ids per phrase, about 100 MB) kept in the user's cache
folder (``$XDG_CACHE_HOME/lora-ft``, else ``~/.cache/lora-ft``) as plain ``.npy`` files that are memory-mapped, not
read; beside each phrase it keeps its rarest word, so that cutting the table for a corpus only looks at the phrases
whose rarest word the corpus has (a few hundredths of a second). Where the cache cannot be written, the index lives
in memory for this process only.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import string
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = ["ParaphraseIndex", "scored_words"]

_FORMAT = 2  # bump when the index layout changes
# Java's StringTokenizer default delimiters.
_JAVA_SPACE = re.compile(r"[ \t\n\r\f]+")
_PIECES = re.compile(r"[^\W_]+|[\W_]")


def scored_words(texts: Iterable[str]) -> set[str]:
    """Every word METEOR's normaliser could make of ``texts``, and more (a superset is what exactness needs)."""
    words: set[str] = set(string.punctuation) | {'"', "&", "<", ">"}
    for text in texts:
        for token in text.split():
            for form in {token, token.lower()}:
                if form in words:
                    continue
                pieces = _PIECES.findall(form)
                if len(pieces) == 1:
                    words.add(form)
                    continue
                for start in range(len(pieces)):  # every run of neighbouring pieces (tokens are short)
                    for stop in range(start + 1, len(pieces) + 1):
                        words.add("".join(pieces[start:stop]))
    return words


def _cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lora-ft"


_ARRAYS = ("words", "phrase_offsets", "phrase_words", "entries", "phrases_by_key", "key_offsets")


class ParaphraseIndex:
    """The paraphrase table as arrays: words, each phrase's word ids, each entry's two phrase ids (file order), and
    the phrases grouped by their key word (their rarest word; empty phrases under a last key, ``len(words)``)."""

    def __init__(self, words: list[str], phrase_offsets: np.ndarray, phrase_words: np.ndarray, entries: np.ndarray,
                 phrases_by_key: np.ndarray, key_offsets: np.ndarray):
        self.words = words
        self.word_ids = {word: index for index, word in enumerate(words)}
        self.phrase_offsets = phrase_offsets  # int64, len = phrases + 1
        self.phrase_words = phrase_words  # int32 word ids, phrase after phrase
        self.entries = entries  # int32 (entries, 2): first phrase id, second phrase id
        self.phrases_by_key = phrases_by_key  # int32 phrase ids, grouped by key word
        self.key_offsets = key_offsets  # int64, len = words + 2: key k's phrases are [key_offsets[k], key_offsets[k+1])

    @classmethod
    def for_table(cls, table: Path) -> ParaphraseIndex:
        """The index of ``table``, read from the cache or built (and cached, where the cache can be written)."""
        stat = table.stat()
        cached = _cache_folder() / f"meteor-paraphrase-v{_FORMAT}-{stat.st_size}-{stat.st_mtime_ns}"
        if cached.is_dir():
            try:
                return cls._load(cached)
            except (OSError, ValueError, KeyError):
                shutil.rmtree(cached, ignore_errors=True)  # a damaged cache folder: rebuild it
        index = cls.build(table)
        try:
            index._save(cached)
        except OSError:
            pass  # no writable cache: this process keeps the index in memory
        return index

    @classmethod
    def _load(cls, folder: Path) -> ParaphraseIndex:
        # memory-mapped: a cut reads only the pages it needs (loading all 100 MB took a fifth of a second)
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in _ARRAYS}
        words = bytes(arrays.pop("words")).decode("utf-8").split("\n")
        return cls(words, **arrays)

    def _save(self, cached: Path) -> None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(dir=cached.parent, prefix=".tmp-" + cached.name))
        try:
            np.save(folder / "words.npy", np.frombuffer("\n".join(self.words).encode("utf-8"), dtype=np.uint8))
            for name in _ARRAYS[1:]:
                np.save(folder / f"{name}.npy", getattr(self, name))
            os.rename(folder, cached)  # atomic: a concurrent reader sees the whole folder or none
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)
            if not cached.is_dir():  # else another process cached it first
                raise
        for old in range(1, _FORMAT):  # earlier formats of this table's index (v1: one 100 MB .npz)
            for stale in cached.parent.glob(cached.name.replace(f"-v{_FORMAT}-", f"-v{old}-", 1) + "*"):
                if stale.is_file():
                    stale.unlink(missing_ok=True)

    @classmethod
    def build(cls, table: Path) -> ParaphraseIndex:
        """Parse ``paraphrase-en.gz`` (slow: several seconds; done once per machine)."""
        with gzip.open(table, "rt", encoding="utf-8") as handle:
            lines = handle.read().split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        count = len(lines) // 3  # Java stops at the first entry whose first line is missing; a ragged tail is
        phrase_ids: dict[str, int] = {}  # read as far as it goes there too (a missing phrase line would fail)
        firsts = [phrase_ids.setdefault(line, len(phrase_ids)) for line in lines[1 : 3 * count : 3]]
        seconds = [phrase_ids.setdefault(line, len(phrase_ids)) for line in lines[2 : 3 * count : 3]]
        del lines
        word_ids: dict[str, int] = {}
        flat: list[int] = []
        offsets = [0]
        for phrase in phrase_ids:  # dicts keep insertion order: phrase id order
            flat.extend(word_ids.setdefault(word, len(word_ids)) for word in _JAVA_SPACE.split(phrase) if word)
            offsets.append(len(flat))
        entries = np.empty((count, 2), dtype=np.int32)
        entries[:, 0] = firsts
        entries[:, 1] = seconds
        phrase_offsets = np.asarray(offsets, dtype=np.int64)
        phrase_words = np.asarray(flat, dtype=np.int32)
        return cls(list(word_ids), phrase_offsets, phrase_words, entries,
                   *_group_by_rarest_word(len(word_ids), phrase_offsets, phrase_words))

    def phrases_made_of(self, words: set[str]) -> np.ndarray:
        """For each phrase, whether every one of its words is in ``words`` (an empty phrase is)."""
        n_words = len(self.words)
        known = np.array(sorted({self.word_ids[word] for word in words if word in self.word_ids}) + [n_words])
        word_ok = np.zeros(n_words + 1, dtype=bool)
        word_ok[known] = True
        # only a phrase whose key word is known can be made of known words
        first = self.key_offsets[known]
        candidates = self.phrases_by_key[_concatenated_ranges(first, self.key_offsets[known + 1] - first)]
        starts = self.phrase_offsets[candidates]
        lengths = self.phrase_offsets[candidates + 1] - starts
        unknown = ~word_ok[self.phrase_words[_concatenated_ranges(starts, lengths)]]
        rejected = np.repeat(np.arange(len(candidates)), lengths)[unknown]
        made_of = np.zeros(len(self.phrase_offsets) - 1, dtype=bool)
        made_of[candidates] = True
        made_of[candidates[rejected]] = False
        return made_of

    def filtered(self, hypothesis_words: set[str], reference_words: set[str]) -> tuple[bytes, int]:
        """The entries that can match between a hypothesis and a reference made of these words, as a gzip file in
        METEOR's format (file order), and how many.

        A paraphrase match pairs a span of the hypothesis with a span of a reference, one of them the entry's
        first phrase and the other its second; an entry is kept if it can pair them either way round.
        """
        # bit 0: the phrase is made of hypothesis words; bit 1: of reference words
        sides = self.phrases_made_of(hypothesis_words).view(np.uint8)
        sides |= self.phrases_made_of(reference_words).view(np.uint8) << 1
        first, second = sides[self.entries[:, 0]], sides[self.entries[:, 1]]
        keep = np.flatnonzero(((first & (second >> 1)) | (second & (first >> 1))) & 1)
        kept = np.asarray(self.entries[keep])
        text = {int(phrase): self._phrase(int(phrase)) for phrase in np.unique(kept)}
        # "0": the probability line, which METEOR reads and ignores
        lines = "".join([f"0\n{text[a]}\n{text[b]}\n" for a, b in kept.tolist()])
        return gzip.compress(lines.encode("utf-8"), compresslevel=1, mtime=0), len(keep)

    def write_filtered(self, hypothesis_words: set[str], reference_words: set[str], path: Path) -> int:
        """Write :meth:`filtered`'s table to ``path``; how many entries it has."""
        data, count = self.filtered(hypothesis_words, reference_words)
        Path(path).write_bytes(data)
        return count

    def _phrase(self, phrase: int) -> str:
        ids = self.phrase_words[self.phrase_offsets[phrase] : self.phrase_offsets[phrase + 1]]
        return " ".join(self.words[i] for i in ids.tolist())


def _concatenated_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """[starts[0], starts[0] + lengths[0]), [starts[1], ...), ... concatenated."""
    ends = np.cumsum(lengths)
    return np.repeat(np.asarray(starts, dtype=np.int64) - (ends - lengths), lengths) + np.arange(ends[-1] if len(ends) else 0)


def _group_by_rarest_word(n_words: int, phrase_offsets: np.ndarray, phrase_words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each phrase's key (its word that occurs in the fewest phrase positions; ``n_words`` for an empty phrase):
    the phrase ids grouped by key, and where each key's group starts (``n_words + 2`` offsets)."""
    lengths = np.diff(phrase_offsets)
    key = np.full(len(lengths), n_words, dtype=np.int64)
    if len(phrase_words):
        rarity = np.bincount(phrase_words, minlength=n_words).astype(np.int64) * n_words + np.arange(n_words)
        filled = lengths > 0  # reduceat over the non-empty phrases only: each segment is exactly one phrase
        key[filled] = np.minimum.reduceat(rarity[phrase_words], phrase_offsets[:-1][filled]) % n_words
    phrases_by_key = np.argsort(key, kind="stable").astype(np.int32)
    key_offsets = np.searchsorted(key[phrases_by_key], np.arange(n_words + 2)).astype(np.int64)
    return phrases_by_key, key_offsets
