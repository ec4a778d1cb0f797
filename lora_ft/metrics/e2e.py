"""E2E NLG scoring that reproduces the official scorer (tuetschek/e2e-metrics ``measure_scores.py REF PRED -p``).

Per metric (see /work/shared/reference/metrics.md for how each was checked against the official scorer):

- BLEU: the official Python MT-Eval BLEU (case-insensitive, multi-reference, 4-grams) on sacrebleu's 13a
  tokenisation; its accumulation is written out in ``_bleu`` because sacrebleu's differs on outputs shorter than
  4 tokens (on longer ones the two agree, tested).
- NIST: :func:`lora_ft.metrics.nist.corpus_nist`, a port of the official Python MT-Eval NIST-5.
- METEOR: METEOR 1.5, the jar shipped in the pycocoevalcap wheel, run by Java with the COCO scorer's options
  (two Java processes where two cores are free, started as scoring starts and kept for later calls:
  :mod:`lora_ft.metrics.meteor_process`).
- ROUGE_L, CIDEr: pycocoevalcap's ``Rouge`` and ``Cider`` formulas, computed faster by :mod:`lora_ft.metrics.rouge_l`
  and :mod:`lora_ft.metrics.cider` (tested equal to pycocoevalcap).

METEOR, ROUGE_L and CIDEr see the captions the way the COCO scorer does: PTB-tokenised, lower-cased, punctuation
dropped, references and predictions each tokenised as one batch in segment order
(:mod:`lora_ft.metrics.ptb_tokenizer`, a pure-Python port of the Java tokenizer the COCO scripts call).

BLEU, METEOR and ROUGE_L are returned × 100 (the LoRA paper's scale), NIST and CIDEr as they are.
"""

from __future__ import annotations

import atexit
import math
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path


from lora_ft.metrics.meteor_paraphrase import scored_words
from lora_ft.metrics.meteor_process import MeteorPool, process_count
from lora_ft.metrics.cider import corpus_cider
from lora_ft.metrics.nist import NgramMatches, lowercase_tokens, nist_of_matches
from lora_ft.metrics.rouge_l import corpus_rouge_l
from lora_ft.metrics.ptb_tokenizer import coco_tokenize_batch
from ..errors import UserError

__all__ = [
    "MeteorUnavailableError",
    "score_e2e",
    "bleu_of_counts",
    "meteor_score",
    "close_meteor",
    "read_references",
    "read_predictions",
    "write_references",
    "write_predictions",
]

E2E_METRICS = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")


class MeteorUnavailableError(UserError, RuntimeError):
    """METEOR needs Java (and the jar from the pycocoevalcap wheel); there is no honest substitute."""


# ---------------------------------------------------------------------------------------------------------------
# Files in the official scorer's plain-text formats
# ---------------------------------------------------------------------------------------------------------------


def read_references(path: str | Path) -> list[list[str]]:
    """Read references as the official scorer does: one per line, the references of one MR grouped together,
    groups separated by a blank line.

    Lines are stripped. Several blank lines in a row count as one separator. As in the official scorer, a file
    without any blank line is read as one reference per MR.
    """
    groups: list[list[str]] = [[]]
    with open(path, encoding="utf-8-sig") as handle:
        for line in handle:
            line = line.strip()
            if line:
                groups[-1].append(line)
            elif groups[-1]:
                groups.append([])
    if not groups[-1]:
        groups.pop()
    if len(groups) == 1:  # no blank line: a single-reference file
        groups = [[ref] for ref in groups[0]]
    return groups


def read_predictions(path: str | Path) -> list[str]:
    """Read system outputs as the official scorer does: one per line (stripped), blank lines included."""
    with open(path, encoding="utf-8-sig") as handle:
        return [line.strip() for line in handle]


def write_references(path: str | Path, groups: Sequence[Sequence[str]]) -> None:
    """Write reference groups in the official format (one per line, a blank line between groups)."""
    blocks = []
    for index, group in enumerate(groups):
        refs = [_single_line(ref, f"reference group {index}") for ref in group]
        if not refs or any(not ref for ref in refs):
            raise ValueError(
                f"reference group {index} is empty or holds an empty reference; the blank-line format cannot "
                "represent that"
            )
        blocks.append("\n".join(refs))
    Path(path).write_text("\n\n".join(blocks) + "\n", encoding="utf-8")


def write_predictions(path: str | Path, lines: Sequence[str]) -> None:
    """Write system outputs in the official format (one per line)."""
    text = "".join(_single_line(line, f"prediction {i}") + "\n" for i, line in enumerate(lines))
    Path(path).write_text(text, encoding="utf-8")


def _single_line(text: str, what: str) -> str:
    if "\n" in text or "\r" in text:
        raise ValueError(f"{what} contains a line break ({text!r}); join or strip it before writing")
    return text.strip()


# ---------------------------------------------------------------------------------------------------------------
# METEOR 1.5 through the jar
# ---------------------------------------------------------------------------------------------------------------


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise MeteorUnavailableError(
            "METEOR needs a Java runtime on the PATH and none was found. Install one (for example "
            "`apt-get install default-jre-headless`) or score without METEOR (meteor=False)."
        )
    return java


def _meteor_jar() -> Path:
    spec = find_spec("pycocoevalcap.meteor.meteor")  # pycocoevalcap is a namespace package: locate the module
    if spec is None or spec.origin is None:
        raise MeteorUnavailableError("METEOR needs the pycocoevalcap package (pip install pycocoevalcap)")
    jar = Path(spec.origin).parent / "meteor-1.5.jar"
    if not jar.is_file() or not (jar.parent / "data" / "paraphrase-en.gz").is_file():
        raise MeteorUnavailableError(f"METEOR 1.5 jar or its paraphrase table is missing next to {jar}")
    return jar


_meteor: MeteorPool | None = None  # the processes kept for later calls
_meteor_lock = threading.Lock()


def close_meteor() -> None:
    """Stop the METEOR Java processes kept for later calls (about 0.2 GB each); they restart when needed."""
    global _meteor
    with _meteor_lock:
        if _meteor is not None:
            _meteor.close()
            _meteor = None


atexit.register(close_meteor)


def _start_meteor(segments: int) -> None:
    """Start METEOR's Java for a corpus of ``segments`` segments now, unless processes are kept: they load while
    Python tokenises, and wait for their paraphrase table, which the first :func:`meteor_score` cuts and gives."""
    global _meteor
    java, jar = _java(), _meteor_jar()
    with _meteor_lock:
        if _meteor is None or not _meteor.alive():
            if _meteor is not None:
                _meteor.close()
            _meteor = MeteorPool(java, jar, process_count(segments), cut=True)


def meteor_score(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], *, full_table: bool = False,
    processes: int | None = None,
) -> float:
    """Corpus METEOR 1.5 (``-l en -norm``) as pycocoevalcap's ``Meteor`` computes it, on already tokenised text.

    Fraction, not × 100. The Java processes are started on first use and kept for later calls (:func:`close_meteor`)
    whose words they know; their paraphrase table holds only entries made of the words of the text they were
    started for (same scores, see :mod:`lora_ft.metrics.meteor_paraphrase`). ``full_table``: load the whole table
    (slow; for checking that the cut changes nothing). ``processes``: how many Java processes share the segments
    (None: two where two cores and enough segments, see :mod:`lora_ft.metrics.meteor_process`; for tests).
    """
    return _meteor_score(hypotheses, references, full_table, processes, threading.Event())


def _meteor_score(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], full_table: bool, processes: int | None,
    table_given: threading.Event,
) -> float:
    """:func:`meteor_score`; sets ``table_given`` once Java has its paraphrase table (or on failure)."""
    global _meteor
    try:
        # the words of the text as MeteorPool.score sends it
        sent = [hypothesis.replace("|||", "").replace("  ", " ") for hypothesis in hypotheses]
        words = None
        if not full_table:
            words = (scored_words(sent), scored_words(ref for refs in references for ref in refs))
        java, jar = _java(), _meteor_jar()
        with _meteor_lock:
            if (
                _meteor is None
                or not _meteor.serves(words)
                or (processes is not None and len(_meteor.processes) != processes)
            ):
                if _meteor is not None:
                    _meteor.close()
                count = processes or (1 if full_table else process_count(len(hypotheses)))
                _meteor = MeteorPool(java, jar, count, cut=not full_table)
            try:
                return _meteor.score(hypotheses, references, words, table_given)
            except (RuntimeError, OSError, ValueError) as error:
                failed, _meteor = _meteor, None
                raise failed.failure(error) from None
    finally:
        table_given.set()


# ---------------------------------------------------------------------------------------------------------------
# All five metrics
# ---------------------------------------------------------------------------------------------------------------


def _check_inputs(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("predictions must be a sequence of strings and references a sequence of string sequences")
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} prediction lines but {len(references)} reference groups: there must be one "
            "prediction per MR, in the order of the reference groups"
        )
    for index, (prediction, refs) in enumerate(zip(predictions, references)):
        if not isinstance(prediction, str):
            raise TypeError(f"prediction {index} is {type(prediction).__name__}, not str")
        if isinstance(refs, str) or len(refs) == 0:
            raise ValueError(f"reference group {index} must be a non-empty list of strings, got {refs!r}")
        if not all(isinstance(ref, str) for ref in refs):
            raise TypeError(f"reference group {index} holds a non-string")


# pymteval's smoothing constants: a zero count of matches becomes TINY, a zero (or negative) count of candidate
# n-grams becomes SMALL, so that BLEU is always defined.
_BLEU_TINY = 1e-15
_BLEU_SMALL = 1e-9
BLEU_MAX_N = 4


def _bleu(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """The official scorer's BLEU (pymteval ``BLEUScore``, case-insensitive, 4-grams), as a fraction.

    Hand-written rather than ``sacrebleu.corpus_bleu`` because the two part on short outputs: pymteval adds
    ``len(output) - n + 1`` candidate n-grams even when that is 0 or negative, and counts an empty output as one
    (empty) token; sacrebleu counts neither. On outputs of 4 tokens or more the two agree to ~1e-16 (tested).
    """
    outputs = [lowercase_tokens(prediction) for prediction in predictions]
    tokens = [[lowercase_tokens(ref) for ref in refs] for refs in references]
    return _bleu_of_matches(NgramMatches(outputs, tokens, BLEU_MAX_N))


def _bleu_of_matches(matches: NgramMatches) -> float:
    """:func:`_bleu` from the outputs' and references' n-gram statistics (n up to 4 or more)."""
    hits = [int(matches.hits[n][2].sum()) for n in range(BLEU_MAX_N)]  # clipped matches: integers, exact
    candidates = [0] * BLEU_MAX_N
    reference_length = 0
    for length, lengths in zip(matches.output_lengths, matches.reference_lengths):
        for n in range(1, BLEU_MAX_N + 1):
            candidates[n - 1] += length - n + 1  # may be <= 0: pymteval adds it as it is
        # the reference closest in length to the output; on a tie the shorter
        reference_length += min(lengths, key=lambda ref: (abs(ref - length), ref))
    return bleu_of_counts(hits, candidates, reference_length)


def bleu_of_counts(hits: Sequence[int], candidates: Sequence[int], reference_length: int) -> float:
    """The official BLEU (a fraction) from corpus totals: clipped matches and candidate n-grams of each order n = 1..4
    (candidates[0] is the output length) and the summed closest reference lengths. A bootstrap resample sums these
    per item and calls this once (:mod:`lora_ft.report.intervals`), instead of scoring the resampled corpus again."""
    log_precision = sum(
        math.log(max(hit, _BLEU_TINY) / max(candidate, _BLEU_SMALL)) for hit, candidate in zip(hits, candidates)
    )
    output_length = candidates[0]
    brevity = 1.0
    if output_length <= reference_length:
        brevity = math.exp(1.0 - reference_length / (output_length if output_length else 1e-5))
    return brevity * math.exp(log_precision / BLEU_MAX_N)


def score_e2e(
    predictions: Sequence[str], references: Sequence[Sequence[str]], *, meteor: bool = True
) -> dict[str, float]:
    """Score E2E outputs exactly as the official scorer (``measure_scores.py -p``) does.

    ``predictions``: one output per MR; ``references``: the references of each MR, in the same order.
    Returns ``{"BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"}`` with BLEU, METEOR, ROUGE_L × 100. With
    ``meteor=False`` the METEOR key is absent; without Java, asking for METEOR raises MeteorUnavailableError.
    """
    _check_inputs(predictions, references)
    if len(predictions) == 0:
        raise ValueError("nothing to score: no predictions and no references")
    if meteor:  # fail before the other metrics' seconds of work, not after; and let Java start meanwhile
        _start_meteor(len(predictions))
    scores: dict[str, float] = {}
    # The COCO scorer tokenises all references in one batch and all predictions in another, in segment order.
    flat_refs = coco_tokenize_batch([ref for refs in references for ref in refs])
    coco_preds = coco_tokenize_batch(predictions)
    coco_refs: list[list[str]] = []
    start = 0
    for refs in references:
        coco_refs.append(flat_refs[start : start + len(refs)])
        start += len(refs)
    # METEOR runs in Java (started above): cut its paraphrase table to these words, give it, and let it score
    # while Python computes the other four metrics.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        if meteor:
            table_given = threading.Event()
            pending = pool.submit(_meteor_score, coco_preds, coco_refs, False, None, table_given)
            # Cutting the table is Python work: let it run alone, not switching with the metrics below for the GIL
            table_given.wait()
        # BLEU and NIST: the same MT-Eval tokens and reference n-gram counts (NIST needs up to 5-grams)
        outputs = [lowercase_tokens(prediction) for prediction in predictions]
        tokens = [[lowercase_tokens(ref) for ref in refs] for refs in references]
        matches = NgramMatches(outputs, tokens, 5)
        scores["BLEU"] = 100.0 * _bleu_of_matches(matches)
        scores["NIST"] = nist_of_matches(matches)
        scores["ROUGE_L"] = 100.0 * corpus_rouge_l(coco_preds, coco_refs)
        scores["CIDEr"] = corpus_cider(coco_preds, coco_refs)
        if pending is not None:
            scores["METEOR"] = 100.0 * pending.result()
    return {name: scores[name] for name in E2E_METRICS if name in scores}
