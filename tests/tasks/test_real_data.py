"""The task readers on real rows: SAMSum and MNLI as ../shared/data holds them, and in their other released forms
(SAMSum's JSON, GLUE's MNLI tsv), plus the row slices that let MNLI train and test on disjoint parts of dev_matched."""

from __future__ import annotations

import csv
import json

import pytest

from lora_ft.config import TaskConfig
from lora_ft.tasks import get_task
from lora_ft.tasks.base import TaskDataError


@pytest.fixture
def samsum_dir(shared_data_dir):
    return shared_data_dir / "samsum"


def test_samsum_csv_as_released(samsum_dir):
    task = get_task(TaskConfig(name="samsum", test_file=str(samsum_dir / "test.csv")))
    task.check_source(("test",))
    examples = task.load("test")
    assert len(examples) == 819  # the README's count of the released test split
    first = examples[0]
    assert first.meta["id"] == "13862856"
    assert first.context.startswith("Hannah: Hey, do you have Betty's number?\nAmanda: Lemme check\n")
    assert first.context.endswith("Amanda: Bye bye\n\n")
    assert first.target == " Hannah needs Betty's number but Amanda doesn't have it. She needs to contact Larry."


def test_samsum_released_json_reads_as_the_csv(samsum_dir, tmp_path):
    """The corpus's own release (train.json: a JSON array, turns separated by CRLF) gives the same examples."""
    with (samsum_dir / "validation.csv").open(encoding="utf-8", newline="") as handle:
        rows = [row for _, row in zip(range(5), csv.DictReader(handle))]
    released = [{"id": r["id"], "summary": r["summary"], "dialogue": r["dialogue"].replace("\n", "\r\n")} for r in rows]
    path = tmp_path / "val.json"
    path.write_text(json.dumps(released, indent=1, ensure_ascii=False), encoding="utf-8")
    config = dict(name="samsum", max_eval_examples=5)
    from_json = get_task(TaskConfig(validation_file=str(path), **config)).load("validation")
    from_csv = get_task(TaskConfig(validation_file=str(samsum_dir / "validation.csv"), **config)).load("validation")
    assert from_json == from_csv
    assert "\r" not in from_json[0].context


def test_mnli_jsonl_labels_as_words(mnli_file):
    task = get_task(TaskConfig(name="mnli", validation_file=str(mnli_file)))
    examples = task.load("validation")
    assert len(examples) == 9815
    assert examples[0].context == (
        "The new rights are nice enough\nQuestion: Everyone really likes the newest benefits True, False, or Neither?\n"
        "Answer:"
    )
    assert [e.target for e in examples[:3]] == [" Neither", " False", " True"]  # neutral, contradiction, entailment


def test_mnli_glue_tsv_reads_as_the_jsonl(fixtures, mnli_file):
    """The first row of GLUE's dev_matched.tsv (copied verbatim, see tests/fixtures/PROVENANCE.md) is the jsonl's first."""
    tsv = get_task(TaskConfig(name="mnli", validation_file=str(fixtures / "mnli_glue_dev_matched_head.tsv")))
    tsv.check_source(("validation",))
    jsonl = get_task(TaskConfig(name="mnli", validation_file=str(mnli_file), max_eval_examples=1))
    assert tsv.load("validation") == jsonl.load("validation")


def test_mnli_tsv_quotes_are_text_and_unlabelled_rows_skip(tmp_path, mnli_file):
    """GLUE's tsv has bare quotes (a CSV reader would merge rows) and MultiNLI's '-' gold labels (GLUE drops them)."""
    rows = [json.loads(line) for _, line in zip(range(3), mnli_file.open(encoding="utf-8"))]
    lines = ["sentence1\tsentence2\tgold_label"]
    lines.append('He said "fine\tShe "agreed\tentailment')  # an unmatched quote in each field
    lines += [f"{r['premise']}\t{r['hypothesis']}\t{r['label']}" for r in rows]
    lines.append("p\th\t-")
    path = tmp_path / "dev.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    examples = get_task(TaskConfig(name="mnli", validation_file=str(path))).load("validation")
    assert len(examples) == 4
    assert examples[0].context.startswith('He said "fine\nQuestion: She "agreed ')
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence1\tsentence2\tgold_label\np\th\n", encoding="utf-8")
    with pytest.raises(TaskDataError, match="bad.tsv line 2: 2 tab-separated fields, but the header has 3"):
        get_task(TaskConfig(name="mnli", validation_file=str(bad))).load("validation")


def test_mnli_trains_and_scores_disjoint_slices_of_one_file(mnli_file):
    same = dict(name="mnli", train_file=str(mnli_file), validation_file=str(mnli_file))
    task = get_task(TaskConfig(**same, train_slice="0:100", eval_slice="100:130"))
    task.check_source(("train", "validation"))
    train, scored = task.load("train"), task.load("validation")
    assert len(train) == 100 and len(scored) == 30
    all_rows = get_task(TaskConfig(name="mnli", validation_file=str(mnli_file), max_eval_examples=130)).load("validation")
    assert train == all_rows[:100] and scored == all_rows[100:130]


@pytest.mark.parametrize(
    "slices, message",
    [
        ({}, "both read all of"),
        ({"train_slice": "0:100"}, r"task.validation_slice \(unset: every row\) overlap"),
        ({"train_slice": "0:100", "eval_slice": "50:150"}, "overlap"),
        ({"train_slice": "100:", "eval_slice": "0:101"}, "overlap"),
        ({"train_slice": "a:b", "eval_slice": "0:1"}, "not 'START:END'"),
    ],
)
def test_mnli_scoring_training_rows_is_an_error(mnli_file, slices, message):
    task = get_task(TaskConfig(name="mnli", train_file=str(mnli_file), validation_file=str(mnli_file), **slices))
    with pytest.raises(TaskDataError, match=message):
        task.check_source(("train", "validation"))


def test_a_validation_split_on_training_rows_is_an_error_too(shared_data_dir):
    """The validation split selects (its loss, --epochs best): training rows there are refused like scored ones."""
    valid = str(shared_data_dir / "e2e" / "valid.txt")
    with pytest.raises(TaskDataError, match="training rows would be evaluated: the train and validation splits"):
        get_task(TaskConfig(name="e2e", train_file=valid, validation_file=valid)).check_source(("train", "validation"))
    with pytest.raises(TaskDataError, match="the train and test splits both read all of"):
        get_task(TaskConfig(name="e2e", train_file=valid, test_file=valid)).check_source(("test",))