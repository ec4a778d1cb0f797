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

The full table is parsed once into a compact index (word ids per phrase, about 60 MB) kept in the user's cache
folder (``$XDG_CACHE_HOME/lora-ft``, else ``~/.cache/lora-ft``); cutting it for a corpus takes a fraction of a
second. Where the cache cannot be written, the index lives in memory for this process only.
"""

from __future__ import annotations

import gzip
import os
import re
import string
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = ["ParaphraseIndex", "scored_words"]

_FORMAT = 1  # bump when the index layout changes
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


class ParaphraseIndex:
    """The paraphrase table as arrays: words, each phrase's word ids, each entry's two phrase ids (file order)."""

    def __init__(self, words: list[str], phrase_offsets: np.ndarray, phrase_words: np.ndarray, entries: np.ndarray):
        self.words = words
        self.word_ids = {word: index for index, word in enumerate(words)}
        self.phrase_offsets = phrase_offsets  # int64, len = phrases + 1
        self.phrase_words = phrase_words  # int32 word ids, phrase after phrase
        self.entries = entries  # int32 (entries, 2): first phrase id, second phrase id

    @classmethod
    def for_table(cls, table: Path) -> ParaphraseIndex:
        """The index of ``table``, read from the cache or built (and cached, where the cache can be written)."""
        stat = table.stat()
        cached = _cache_folder() / f"meteor-paraphrase-v{_FORMAT}-{stat.st_size}-{stat.st_mtime_ns}.npz"
        if cached.is_file():
            try:
                with np.load(cached) as data:
                    words = bytes(data["words"]).decode("utf-8").split("\n")
                    return cls(words, data["phrase_offsets"], data["phrase_words"], data["entries"])
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache file: rebuild it
        index = cls.build(table)
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=cached.parent, suffix=".npz.tmp", delete=False) as handle:
                np.savez(
                    handle,
                    words=np.frombuffer("\n".join(index.words).encode("utf-8"), dtype=np.uint8),
                    phrase_offsets=index.phrase_offsets,
                    phrase_words=index.phrase_words,
                    entries=index.entries,
                )
            os.replace(handle.name, cached)  # atomic: a concurrent reader sees the whole file or none
        except OSError:
            pass  # no writable cache: this process keeps the index in memory
        return index

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
        return cls(
            list(word_ids), np.asarray(offsets, dtype=np.int64), np.asarray(flat, dtype=np.int32), entries
        )

    def phrases_made_of(self, words: set[str]) -> np.ndarray:
        """For each phrase, whether every one of its words is in ``words`` (an empty phrase is)."""
        word_ok = np.zeros(len(self.words) + 1, dtype=bool)
        word_ok[-1] = True  # a sentinel after each phrase, so that reduceat never sees an empty segment
        for word in words:
            index = self.word_ids.get(word)
            if index is not None:
                word_ok[index] = True
        lengths = np.diff(self.phrase_offsets)
        padded = np.insert(self.phrase_words, self.phrase_offsets[1:], len(self.words))
        starts = self.phrase_offsets[:-1] + np.arange(len(lengths))
        return np.logical_and.reduceat(word_ok[padded], starts)

    def write_filtered(self, hypothesis_words: set[str], reference_words: set[str], path: Path) -> int:
        """Write the entries that can match between a hypothesis and a reference made of these words to ``path``
        (gzip, METEOR's format, file order); how many.

        A paraphrase match pairs a span of the hypothesis with a span of a reference, one of them the entry's
        first phrase and the other its second; an entry is kept if it can pair them either way round.
        """
        in_hyp = self.phrases_made_of(hypothesis_words)
        in_ref = self.phrases_made_of(reference_words)
        first, second = self.entries[:, 0], self.entries[:, 1]
        keep = np.flatnonzero((in_hyp[first] & in_ref[second]) | (in_ref[first] & in_hyp[second]))
        kept = self.entries[keep]
        text = {int(phrase): self._phrase(int(phrase)) for phrase in np.unique(kept)}
        # "0": the probability line, which METEOR reads and ignores
        lines = [f"0\n{text[a]}\n{text[b]}\n" for a, b in kept.tolist()]
        with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as handle:
            handle.write("".join(lines))
        return len(keep)

    def _phrase(self, phrase: int) -> str:
        ids = self.phrase_words[self.phrase_offsets[phrase] : self.phrase_offsets[phrase + 1]]
        return " ".join(self.words[i] for i in ids.tolist())
