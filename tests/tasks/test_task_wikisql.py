"""WikiSQL task on synthetic rows in the hub's schema (tests/fixtures/wikisql_tiny.jsonl)."""

from __future__ import annotations

import json

import pytest

from lora_ft.config import TaskConfig
from lora_ft.tasks import get_task
from lora_ft.tasks.base import TaskDataError


def test_format_and_meta(fixtures):
    task = get_task(TaskConfig(name="wikisql", train_file=str(fixtures / "wikisql_tiny.jsonl")))
    task.check_source()
    examples = task.load("train")
    assert len(examples) == 3
    assert examples[0].context == "Table: Town | River | Population\nQuestion: Which river flows through Lowtown?\nSQL:"
    assert examples[0].target == " SELECT River FROM table WHERE Town = Lowtown"
    assert examples[2].meta == {
        "header": ["Model", "Engine type", "Top speed (km/h)"],
        "sql": {
            "human_readable": "SELECT MAX Top speed (km/h) FROM table WHERE Model = Model K AND Engine type = V 8",
            "sel": 2,
            "agg": 1,
            "conds": {"column_index": [0, 1], "operator_index": [0, 0], "condition": ["Model K", "V 8"]},
        },
    }
    assert task.separator_eos is False


def test_score_passes_header_and_sql(fixtures, fake_metric):
    calls = fake_metric("wikisql", "logical_form_accuracy", 0.5)
    task = get_task(TaskConfig(name="wikisql", validation_file=str(fixtures / "wikisql_tiny.jsonl")))
    items = task.eval_items(task.load("validation"))
    assert items[1].references == ("SELECT COUNT Town FROM table WHERE Population > 5000",)
    predictions = ["SELECT River FROM table WHERE Town = Lowtown", "x", "y"]
    assert task.score(predictions, items) == {"lf_accuracy": 0.5}
    (args, _), = calls
    assert args[0] == predictions
    assert [g["header"] for g in args[1]] == [i.meta["header"] for i in items]
    assert args[1][0]["sql"]["sel"] == 1


def test_missing_columns_and_csv_are_errors(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"question": "q?", "sql": {"human_readable": "SELECT a FROM table"}}) + "\n")
    with pytest.raises(TaskDataError, match="missing column.*table"):
        get_task(TaskConfig(name="wikisql", train_file=str(path))).load("train")
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text("question\nq?\n")
    with pytest.raises(TaskDataError, match="wikisql reads .jsonl, .json, .parquet"):
        get_task(TaskConfig(name="wikisql", train_file=str(csv_path))).check_source()
