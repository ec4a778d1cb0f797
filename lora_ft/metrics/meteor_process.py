"""METEOR 1.5's Java processes, driven by :mod:`lora_ft.metrics.e2e`.

Where the time goes (630 E2E test MRs, 4,693 references): Java needs about 0.5 s of CPU to start and about 4 s to
score, single-threaded; the paraphrase table, cut to the words of the text (:mod:`lora_ft.metrics.meteor_paraphrase`),
loads in a moment. So:

- the processes start before the text is tokenised: each reads its cut table from a named pipe (FIFO), which the
  table reaches once Python has computed it; meanwhile Java loads its classes, synonyms and stemmer. (Where there
  are no named pipes, Java starts once the table is written.)
- the SCORE requests are shared out over two processes, 16 at a time to whichever asks first. Java answers a
  SCORE request from the request alone, so each segment's statistics are what one process would return; the
  corpus score is what one EVAL request with all of them returns (see :meth:`MeteorProcess.corpus_score`): the
  same score (tested).
"""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lora_ft.metrics.meteor_paraphrase import ParaphraseIndex

__all__ = ["MeteorProcess", "MeteorPool", "process_count", "Words"]

Words = tuple[set[str], set[str]]  # the words of the hypotheses, the words of the references
# A second process costs Java's start (~0.5 s CPU); it pays off from ~70 E2E segments (~7 ms of Java CPU each).
SPLIT_MIN = 100
CHUNK = 16  # SCORE requests sent at a time
_STATS, _CHUNKS = 23, 20  # numbers in a METEOR 1.5 statistics line; where its chunk count is


def process_count(segments: int) -> int:
    """How many METEOR processes to score ``segments`` segments with: two where two cores are free to run them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 2 if cores >= 2 and segments >= SPLIT_MIN else 1


class MeteorProcess:
    """One ``java -jar meteor-1.5.jar - - -stdio -l en -norm`` process, as pycocoevalcap's ``Meteor`` starts it.

    The SCORE/EVAL protocol is pycocoevalcap's. It is driven here rather than through that class because the
    class leaves its Java process to ``__del__``, which deadlocks when scoring failed while holding its lock,
    and because the process is worth keeping: each request is answered from the request alone, so one process
    serves any number of corpora whose words its table holds.
    """

    def __init__(self, java: str, jar: Path, cut: bool) -> None:
        """``cut``: the paraphrase table is given later (:meth:`give_table`); else Java loads the full table."""
        self.jar = jar
        self.folder = tempfile.TemporaryDirectory(prefix="lora-ft-meteor-")
        self.stderr = tempfile.TemporaryFile()
        # -XX:+UseSerialGC: half the memory of the default collector for this single-threaded job;
        # -XX:TieredStopAtLevel=1: the quick JIT compiler only (the optimising one spent more CPU compiling than
        # it saved on a run of seconds: Java's CPU for the 630 E2E MRs 9.9 s -> 5.0 s). Scores are unaffected:
        # neither the collector nor the compiler can change what the program computes (strict IEEE since Java 17).
        self.command = [java, "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-jar", "-Xmx2G", jar.name, "-", "-",
                        "-stdio", "-l", "en", "-norm"]
        self.table = Path(self.folder.name) / "paraphrase-cut.gz" if cut else None
        self.process: subprocess.Popen[bytes] | None = None
        self.given = False  # whether give_table was called
        self.feeder: threading.Thread | None = None  # writes the table into the FIFO
        self.feed_error: BaseException | None = None
        if self.table is None:
            self._start()
        elif hasattr(os, "mkfifo"):
            os.mkfifo(self.table)  # Java starts now and waits at the FIFO for the table
            self._start()

    def _start(self) -> None:
        table = ["-a", str(self.table)] if self.table is not None else []
        self.process = subprocess.Popen(
            self.command + table, cwd=self.jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.stderr,
        )

    def give_table(self, data: bytes) -> None:
        """The cut paraphrase table (gzip bytes), for Java to load now."""
        assert self.table is not None and not self.given
        self.given = True
        if self.process is None:  # no FIFO: write the file, then start Java
            self.table.write_bytes(data)
            self._start()
            return
        self.feeder = threading.Thread(target=self._feed, args=(data,), daemon=True)
        self.feeder.start()

    def _feed(self, data: bytes) -> None:
        assert self.process is not None and self.table is not None
        try:
            # Opening a FIFO for writing waits for a reader; poll instead, in case Java stops before it opens it.
            while True:
                try:
                    fd = os.open(self.table, os.O_WRONLY | os.O_NONBLOCK)
                    break
                except OSError as error:
                    if error.errno != errno.ENXIO:  # ENXIO: no reader yet
                        raise
                if self.process.poll() is not None:
                    raise RuntimeError("Java stopped before it read its paraphrase table")
                time.sleep(0.005)
            os.set_blocking(fd, True)
            with open(fd, "wb") as fifo:
                fifo.write(data)
        except BaseException as error:  # Java must not wait for the table forever: stop it; reading then fails
            self.feed_error = error
            self.process.kill()

    def fed(self) -> bool:
        """Whether Java has (or never needed) the table it waits for."""
        return self.table is None or (self.given and (self.feeder is None or not self.feeder.is_alive()))

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None and self.feed_error is None

    def _send(self, line: str) -> None:
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write((line + "\n").encode())
            self.process.stdin.flush()
        except OSError as error:  # the process died
            raise self._stopped(f"the METEOR process stopped reading ({error})") from None

    def _read(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        answer = self.process.stdout.readline().decode().strip()
        if not answer:
            raise self._stopped("the METEOR process stopped answering")
        return answer

    def _stopped(self, what: str) -> RuntimeError:
        if self.feeder is not None:
            self.feeder.join()
        if self.feed_error is not None:
            return RuntimeError(f"giving Java its paraphrase table failed: {self.feed_error!r}")
        return RuntimeError(what)

    def answer(self, requests: Sequence[str], take: Callable[[], int | None], answers: list[str]) -> None:
        """Send chunks of ``requests`` (each chunk's first index from ``take``, None when none is left) and put
        Java's answers into ``answers``: two chunks in flight, so that Java always has the next one to work on.
        At most 2 * CHUNK answers are ever unread: Java never blocks on a full output pipe while this side
        writes (no second thread needed)."""
        in_flight: deque[int] = deque()
        while True:
            while len(in_flight) < 2 and (start := take()) is not None:
                self._send("\n".join(requests[start : start + CHUNK]))
                in_flight.append(start)
            if not in_flight:
                return
            start = in_flight.popleft()
            answers[start : start + CHUNK] = [self._read() for _ in requests[start : start + CHUNK]]

    def corpus_score(self, stats: Sequence[str]) -> float:
        """The corpus score of these segment statistics, as an EVAL request of all of them returns it.

        EVAL (``Meteor.scoreStdio``, ``MeteorStats.addStats``, read in the jar's bytecode) adds the segments'
        statistics up, except the chunk count of a segment matched entirely in one chunk, and scores the sums
        (``MeteorScorer.computeMetrics`` reads only the counts a statistics line holds). The counts are whole
        numbers: they are summed here the same way, exactly, and one SING request scores the sums, without Java
        parsing and scoring every segment again (0.2 s). EVAL for anything else.
        """
        rows = [[float(value) for value in line.split()] for line in stats]
        if not rows or any(len(row) != _STATS or not all(value.is_integer() for value in row) for row in rows):
            self._send("EVAL ||| " + " ||| ".join(stats))
            for _ in stats:  # the per-segment scores come first; only the corpus score is needed
                self._read()
            return float(self._read())
        sums = [sum(column) for column in zip(*rows)]
        # a statistics line: test and reference length, their function words, then per matching stage (4) the
        # test and reference content-word matches and function-word matches, then chunks and the word matches
        sums[_CHUNKS] = sum(row[_CHUNKS] for row in rows if not (
            sum(row[4:_CHUNKS:2]) == row[0] and sum(row[5:_CHUNKS:2]) == row[1] and row[_CHUNKS] == 1
        ))
        self._send("SING ||| " + " ".join(f"{int(total)}.0" for total in sums))
        return float(self._read())

    def close(self) -> str:
        """Stop the process (if running); what it printed on stderr."""
        if self.process is not None and self.process.poll() is None:
            assert self.process.stdin is not None
            if not self.fed():
                self.process.kill()  # it waits for a table that will not come
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.feeder is not None:
            self.feeder.join()
        self.folder.cleanup()
        if self.stderr.closed:
            return ""
        self.stderr.seek(0)
        said = self.stderr.read().decode(errors="replace").strip()
        self.stderr.close()
        return said


class MeteorPool:
    """The METEOR processes kept between calls, all started alike: with the full paraphrase table, or with one cut
    to some words (given to all of them by the first :meth:`score`)."""

    def __init__(self, java: str, jar: Path, count: int, *, cut: bool) -> None:
        self.jar = jar
        self.cut = cut
        self.words: Words | None = None  # what the cut table was made for (None: not given yet, or no cut)
        self.processes: list[MeteorProcess] = []
        try:
            for _ in range(count):
                self.processes.append(MeteorProcess(java, jar, cut))
        except BaseException:
            self.close()
            raise

    def alive(self) -> bool:
        return all(process.alive() or process.process is None for process in self.processes)

    def serves(self, words: Words | None) -> bool:
        """Whether these (running) processes score text made of ``words`` as the full table would; ``None``:
        whether they have the full table."""
        if not self.alive():
            return False
        if words is None or not self.cut:
            return not self.cut
        return self.words is None or (words[0] <= self.words[0] and words[1] <= self.words[1])

    def score(
        self, hypotheses: Sequence[str], references: Sequence[Sequence[str]], words: Words | None,
        table_given: threading.Event | None = None,
    ) -> float:
        """Corpus METEOR; ``words``: those of the text (for the cut table, if not given yet). ``table_given`` is set
        once every process has its table."""
        if self.cut and self.words is None:
            assert words is not None
            data, _ = ParaphraseIndex.for_table(self.jar.parent / "data" / "paraphrase-en.gz").filtered(*words)
            for process in self.processes:
                process.give_table(data)
            self.words = words
        if table_given is not None:
            table_given.set()
        requests = [
            " ||| ".join(("SCORE", " ||| ".join(refs), hypothesis.replace("|||", "").replace("  ", " ")))
            for hypothesis, refs in zip(hypotheses, references)
        ]
        # Chunks go to whichever process asks first: the processes finish together even if one runs slower.
        ways = len(self.processes) if len(requests) >= SPLIT_MIN else 1
        starts = deque(range(0, len(requests), CHUNK))
        lock = threading.Lock()

        def take() -> int | None:
            with lock:
                return starts.popleft() if starts else None

        answers: list[str] = [""] * len(requests)
        with ThreadPoolExecutor(max_workers=ways) as pool:
            for done in [pool.submit(process.answer, requests, take, answers) for process in self.processes[:ways]]:
                done.result()
        return self.processes[0].corpus_score(answers)

    def failure(self, error: BaseException) -> RuntimeError:
        """Stop the processes; an error that says what went wrong and what Java printed."""
        said = "\n".join(text for text in self.close() if text)[-2000:]
        return RuntimeError(f"METEOR (java -jar {self.jar}) failed: {error}. Java printed: {said or '(nothing)'}")

    def close(self) -> list[str]:
        """Stop the processes; what each printed on stderr."""
        return [process.close() for process in self.processes]
