"""MNLI task on synthetic rows (tests/fixtures/mnli_tiny.*)."""

from __future__ import annotations

import pytest

from lora_ft.config import TaskConfig
from lora_ft.tasks import get_task
from lora_ft.tasks.base import TaskDataError
from lora_ft.tasks.mnli import predicted_label


@pytest.mark.parametrize("name", ["mnli_tiny.jsonl", "mnli_tiny.csv"])
def test_format_and_labels(fixtures, name):
    task = get_task(TaskConfig(name="mnli", validation_file=str(fixtures / name)))
    task.check_source()
    examples = task.load("validation")
    assert examples[0].context == (
        "The bakery opens at six every morning.\nQuestion: The bakery opens early. True, False, or Neither?\nAnswer:"
    )
    assert [e.target for e in examples] == [" True", " Neither", " False"]
    assert [e.meta["label"] for e in examples] == [0, 1, 2]


@pytest.mark.parametrize(
    "text, label",
    [("True", 0), (" true.", 0), ("Neither, because", 1), ("False", 2), ("Maybe", -1), ("", -1), ("Truely", -1)],
)
def test_the_generated_word_decides(text, label):
    assert predicted_label(text) == label


def test_score_maps_words_to_labels(fixtures, fake_metric):
    calls = fake_metric("accuracy", "accuracy", 2 / 3)
    task = get_task(TaskConfig(name="mnli", validation_file=str(fixtures / "mnli_tiny.jsonl")))
    items = task.eval_items(task.load("validation"))
    assert task.score(["True", "False", "False"], items) == {"accuracy": pytest.approx(2 / 3)}
    (args, _), = calls
    assert args == ([0, 2, 2], [0, 1, 2])


def test_test_split_and_unlabelled_rows_are_errors(tmp_path):
    task = get_task(TaskConfig(name="mnli"))
    with pytest.raises(TaskDataError, match="test labels are hidden"):
        task.load("test")
    with pytest.raises(TaskDataError, match="test labels are hidden"):
        get_task(TaskConfig(name="mnli", source="hub", test_file=str(tmp_path / "t.jsonl"))).check_source(("test",))
    path = tmp_path / "unlabelled.jsonl"
    path.write_text('{"premise": "p.", "hypothesis": "h.", "label": -1, "idx": 0}\n')
    with pytest.raises(TaskDataError, match="unlabelled.jsonl row 1: label -1"):
        get_task(TaskConfig(name="mnli", train_file=str(path))).load("train")


def test_a_labelled_local_test_file_is_a_test_split(fixtures):
    """Offline MNLI trains, selects and scores on three slices of dev_matched: the third is the test split."""
    path = str(fixtures / "mnli_tiny.jsonl")
    task = get_task(TaskConfig(name="mnli", test_file=path))
    task.check_source(("test",))
    assert task.load("test") == get_task(TaskConfig(name="mnli", validation_file=path)).load("validation")


def test_validation_means_validation_matched_on_the_hub(monkeypatch, hub_up):
    import datasets

    calls = []

    def fake(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.Dataset.from_dict({"premise": ["p."], "hypothesis": ["h."], "label": [1], "idx": [0]})

    monkeypatch.setattr(datasets, "load_dataset", fake)
    get_task(TaskConfig(name="mnli")).load("validation")
    assert calls == [(("nyu-mll/glue", "mnli"), {"revision": None, "split": "validation_matched"})]
