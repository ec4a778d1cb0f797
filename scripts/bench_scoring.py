"""Benchmark: scoring the 630 E2E test MRs with all five metrics (lora_ft.metrics.e2e.score_e2e).

    python scripts/bench_scoring.py [--repeats 3] [--out bench/scoring.json] [--official PATH/TO/measure_scores.py]

Each repeat runs in a fresh Python process (METEOR's Java process started from nothing, as `lora-ft eval` does).
The outputs are a fixed rule-based system's (tests/metrics/test_metrics_e2e.py: template_output), so the figures
do not depend on a model. With --official, the official scorer (tuetschek/e2e-metrics `measure_scores.py -p`) runs
on the same files alternately with lora-ft's, and its scores and time are recorded beside them.
Writes medians of wall time and of CPU time (this process and its children: a fair figure on a shared machine).
The first run on a machine builds METEOR's paraphrase index first (~20 s of CPU, once, ~110 MB in
~/.cache/lora-ft; recorded as paraphrase_index_s): the timed runs, like every later scoring, only read it.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_SPLIT = ROOT / ".." / "shared" / "data" / "e2e" / "test.txt"

ONE_RUN = """
import json, sys, time
sys.path.insert(0, {tests!r})
from metrics.test_metrics_e2e import template_output
groups = {{}}
for line in open({split!r}, encoding="utf-8").read().splitlines():
    mr, ref = line.split("||", 1)
    groups.setdefault(mr.strip(), []).append(ref.strip())
predictions = [template_output(mr) for mr in groups]
start = time.perf_counter()
from lora_ft.metrics.e2e import score_e2e
scores = score_e2e(predictions, list(groups.values()))
print(json.dumps({{"seconds": time.perf_counter() - start, "scores": scores}}))
"""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_lora_ft(split: Path) -> dict:
    code = ONE_RUN.format(tests=str(ROOT / "tests"), split=str(split))
    cpu = _children_cpu()
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    wall = time.perf_counter() - start
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "cpu_s": _children_cpu() - cpu, "scores": result["scores"]}


def run_official(script: Path, split: Path, folder: Path) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from metrics.test_metrics_e2e import template_output

    groups: dict[str, list[str]] = {}
    for line in split.read_text(encoding="utf-8").splitlines():
        mr, ref = line.split("||", 1)
        groups.setdefault(mr.strip(), []).append(ref.strip())
    refs, preds = folder / "refs.txt", folder / "preds.txt"
    refs.write_text("\n\n".join("\n".join(group) for group in groups.values()) + "\n", encoding="utf-8")
    preds.write_text("".join(template_output(mr) + "\n" for mr in groups), encoding="utf-8")
    cpu = _children_cpu()
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(script), "-p", str(refs), str(preds)], capture_output=True, text=True, check=True,
        cwd=script.parent,
    )
    return {"wall_s": time.perf_counter() - start, "cpu_s": _children_cpu() - cpu, "output": done.stdout[-400:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "scoring.json")
    parser.add_argument("--official", type=Path, default=None, help="path to the official measure_scores.py")
    args = parser.parse_args()
    # METEOR's paraphrase index is built once per machine (lora_ft/metrics/meteor_paraphrase.py); build it before
    # timing, and say how long that took where it had to be built.
    sys.path.insert(0, str(ROOT))
    from lora_ft.metrics.e2e import _meteor_jar
    from lora_ft.metrics.meteor_paraphrase import ParaphraseIndex

    start = time.perf_counter()
    ParaphraseIndex.for_table(_meteor_jar().parent / "data" / "paraphrase-en.gz")
    index_s = time.perf_counter() - start
    runs, official = [], []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            runs.append(run_lora_ft(TEST_SPLIT))
            if args.official is not None:
                official.append(run_official(args.official, TEST_SPLIT, Path(folder)))
    report = {
        "benchmark": "score 630 E2E test MRs, five metrics, fresh process (METEOR's Java started cold)",
        "mrs": 630,
        "paraphrase_index_s": round(index_s, 2),  # reading the cached index, or building it the first time
        "repeats": args.repeats,
        "lora_ft_wall_s_median": round(statistics.median(r["wall_s"] for r in runs), 2),
        "lora_ft_cpu_s_median": round(statistics.median(r["cpu_s"] for r in runs), 2),
        "lora_ft_wall_s_all": [round(r["wall_s"], 2) for r in runs],
        "scores": runs[0]["scores"],
        "official_wall_s_median": round(statistics.median(r["wall_s"] for r in official), 2) if official else None,
        "official_output": official[0]["output"] if official else None,
        "ratio_official_over_lora_ft": (
            round(statistics.median(r["wall_s"] for r in official) / statistics.median(r["wall_s"] for r in runs), 2)
            if official else None
        ),
        "command": "python scripts/bench_scoring.py " + " ".join(sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
