"""METEOR's Java processes: started early, fed their paraphrase table later, segments shared out over two."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from lora_ft.metrics import e2e, meteor_process
from lora_ft.metrics.meteor_process import MeteorPool, MeteorProcess, process_count
from lora_ft.metrics.ptb_tokenizer import coco_tokenize_batch

from test_metrics_e2e import template_output  # tests/metrics is on sys.path (rootdir-relative test modules)

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")


def _coco(predictions: list[str], references: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    flat = coco_tokenize_batch([ref for refs in references for ref in refs])
    groups, start = [], 0
    for refs in references:
        groups.append(flat[start : start + len(refs)])
        start += len(refs)
    return coco_tokenize_batch(predictions), groups


def test_two_processes_only_with_two_cores_and_enough_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert (process_count(630), process_count(meteor_process.SPLIT_MIN - 1)) == (2, 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert process_count(630) == 1


def _eval(process: MeteorProcess, hypotheses: list[str], references: list[list[str]]) -> float:
    """The corpus score as pycocoevalcap gets it: every segment's statistics, then one EVAL request of all."""
    requests = [" ||| ".join(("SCORE", " ||| ".join(refs), hyp.replace("|||", "").replace("  ", " ")))
                for hyp, refs in zip(hypotheses, references)]
    stats = []
    for request in requests:
        process._send(request)
        stats.append(process._read())
    process._send("EVAL ||| " + " ||| ".join(stats))
    return float([process._read() for _ in range(len(stats) + 1)][-1])


@pytest.mark.slow
@needs_java
def test_two_processes_and_summed_statistics_give_exactly_the_eval_score(e2e_test_set, e2e_example) -> None:
    """Each SCORE answer depends on its request alone, and EVAL scores the sums of the segments' whole counts."""
    mrs, references = e2e_test_set
    # a segment matched entirely in one chunk (a reference as output) adds no chunk to EVAL's sums
    mixed = [refs[0] if i % 2 else template_output(mr) for i, (mr, refs) in enumerate(zip(mrs, references))]
    cases = [_coco([template_output(mr) for mr in mrs], references), _coco(mixed[:300], references[:300]),
             _coco(*e2e_example), e2e_example]
    try:
        for hypotheses, refs in cases:
            two = e2e.meteor_score(hypotheses, refs, processes=2)
            assert len(e2e._meteor.processes) == 2  # type: ignore[union-attr]
            assert two == _eval(e2e._meteor.processes[1], hypotheses, refs)  # type: ignore[union-attr]
            assert e2e.meteor_score(hypotheses, refs, processes=1) == two
    finally:
        e2e.close_meteor()


@needs_java
def test_a_process_waiting_for_its_table_stops_at_once(tmp_path: Path) -> None:
    pool = MeteorPool(shutil.which("java") or "java", e2e._meteor_jar(), 2, cut=True)
    start = time.perf_counter()
    pool.close()
    assert time.perf_counter() - start < 5  # not the 10 s given to a process that was fed


@needs_java
def test_without_named_pipes_java_starts_once_the_table_is_written(monkeypatch: pytest.MonkeyPatch, e2e_example) -> None:
    hypotheses, refs = _coco(*e2e_example)
    try:
        with_fifo = e2e.meteor_score(hypotheses, refs, processes=1)
        e2e.close_meteor()
        monkeypatch.delattr(os, "mkfifo", raising=False)
        assert e2e.meteor_score(hypotheses, refs, processes=1) == with_fifo
    finally:
        e2e.close_meteor()


def test_java_stopping_before_it_reads_its_table_is_an_error(tmp_path: Path) -> None:
    jar = tmp_path / "meteor-1.5.jar"  # never run: the "java" below exits at once
    (tmp_path / "data").mkdir()
    pool = MeteorPool(shutil.which("false") or "false", jar, 1, cut=True)
    pool.words = ({"a"}, {"a"})  # as if the table were cut already
    process: MeteorProcess = pool.processes[0]
    if process.process is not None:  # with a FIFO: Java was started and must be told that no table will come
        process.give_table(b"")
        with pytest.raises(RuntimeError, match="Java stopped before it read its paraphrase table"):
            pool.score(["a"], [["a"]], None)
    pool.close()
