"""E2E task: reading the authors' files and the original form through one code path, limits, eval items, errors."""

from __future__ import annotations

import pytest

from lora_ft.tasks import get_task
from lora_ft.tasks.base import TaskDataError
from lora_ft.tasks.e2e import E2ETask

from lora_ft.config import TaskConfig


def _task(**kwargs) -> E2ETask:
    task = get_task(TaskConfig(name="e2e", **kwargs))
    assert isinstance(task, E2ETask)
    return task


def test_validation_and_test_files_have_the_published_sizes(e2e_dir):
    task = _task(validation_file=str(e2e_dir / "valid.txt"), test_file=str(e2e_dir / "test.txt"))
    task.check_source()
    valid, test = task.load("validation"), task.load("test")
    assert (len(valid), len(task.eval_items(valid))) == (4672, 547)  # README / paper.md
    test_items = task.eval_items(test)
    assert (len(test), len(test_items)) == (4693, 630)
    counts = [len(i.references) for i in test_items]
    assert (min(counts), max(counts), sum(counts)) == (1, 45, 4693)


def test_example_format_follows_the_paper(e2e_dir):
    valid = _task(validation_file=str(e2e_dir / "valid.txt")).load("validation")
    first = valid[0]
    assert first.context == "name : Alimentum | area : city centre | family friendly : no"
    assert first.target == " There is a place in the city centre , Alimentum , that is not family - friendly ."
    assert E2ETask.separator_eos is True


def test_eval_items_group_references_by_mr_in_file_order(e2e_dir):
    task = _task(validation_file=str(e2e_dir / "valid.txt"))
    items = task.eval_items(task.load("validation"))
    lines = (e2e_dir / "valid.txt").read_text(encoding="utf-8").splitlines()
    assert items[0].context == lines[0].split("||")[0]
    assert items[0].references == tuple(line.split("||")[1].strip() for line in lines[:6])  # `uniq -c`: 6 refs
    assert items[1].context == "name : Alimentum | area : city centre | family friendly : no | near : Burger King"


def test_original_form_csv_goes_through_the_same_path_as_the_authors_file(e2e_dir):
    paper = _task(validation_file=str(e2e_dir / "valid.txt")).load("validation")
    converted = _task(validation_file=str(e2e_dir / "devset.csv")).load("validation")
    assert converted == paper


def test_original_form_is_kept_when_asked(e2e_dir):
    task = _task(validation_file=str(e2e_dir / "devset.csv"), e2e_form="original", max_eval_examples=1)
    task.check_source()
    examples = task.load("validation")
    assert examples[0].context == "name[Alimentum], area[city centre], familyFriendly[no]"
    assert examples[0].target == " There is a place in the city centre, Alimentum, that is not family-friendly."


def test_paper_file_with_original_form_is_an_error(e2e_dir):
    task = _task(validation_file=str(e2e_dir / "valid.txt"), e2e_form="original")
    with pytest.raises(TaskDataError, match="already in the paper's form"):
        task.check_source()


def test_max_eval_examples_keeps_whole_mr_groups(e2e_dir):
    task = _task(test_file=str(e2e_dir / "test.txt"), max_eval_examples=3)
    examples = task.load("test")
    lines = (e2e_dir / "test.txt").read_text(encoding="utf-8").splitlines()
    first_three = list(dict.fromkeys(line.split("||")[0] for line in lines))[:3]
    expected = [line for line in lines if line.split("||")[0] in first_three]
    assert len(task.eval_items(examples)) == 3
    assert len(examples) == len(expected)
    assert [e.context for e in examples] == [line.split("||")[0] for line in expected]


def test_max_train_examples_takes_the_first_rows(e2e_dir):
    examples = _task(train_file=str(e2e_dir / "valid.txt"), max_train_examples=7).load("train")
    assert len(examples) == 7


@pytest.mark.parametrize(
    "content, message",
    [
        ("name : A||ok .\nname : B no separator\n", r"bad\.txt line 2: expected `MR\|\|reference`"),
        ("name : A||ok .\n\n  ||empty mr .\n", r"bad\.txt line 3: empty MR"),
        ("name : A||\n", r"bad\.txt line 1: empty reference"),
        ("name : A||x||y\n", r"bad\.txt line 1: .*exactly one"),
    ],
)
def test_bad_lines_name_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TaskDataError, match=message):
        _task(train_file=str(path)).load("train")


def test_offline_hub_explains_how_to_use_local_files(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'tuetschek/e2e_nlg' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TaskDataError) as info:
        _task().load("validation")
    message = str(info.value)
    assert "tuetschek/e2e_nlg" in message
    assert "task.train_file / task.validation_file / task.test_file" in message
    assert "HF_HUB_OFFLINE" in message
    assert isinstance(info.value.__cause__, ConnectionError)


def test_hub_defaults_reach_load_dataset(monkeypatch, hub_up):
    import datasets

    calls = []

    def fake(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.Dataset.from_dict(
            {"meaning_representation": ["name[Blue Spice], eatType[coffee shop], area[city centre]"],
             "human_reference": ["A coffee shop in the city centre area called Blue Spice."]}
        )

    monkeypatch.setattr(datasets, "load_dataset", fake)
    examples = _task().load("test")
    assert calls == [(("tuetschek/e2e_nlg", None), {"revision": "refs/convert/parquet", "split": "test"})]
    assert examples[0].context == "name : Blue Spice | Type : coffee shop | area : city centre"
    assert examples[0].target == " A coffee shop in the city centre area called Blue Spice ."


def test_check_source_catches_missing_files_and_empty_local_config(tmp_path):
    with pytest.raises(TaskDataError, match="no such file"):
        _task(train_file=str(tmp_path / "missing.txt")).check_source()
    with pytest.raises(TaskDataError, match="none of task.train_file"):
        _task(source="local").check_source()
    (tmp_path / "x.txt").write_text("name : A||ok .\n")
    local = _task(source="local", train_file=str(tmp_path / "x.txt"))
    local.check_source(["train"])
    with pytest.raises(TaskDataError, match="task.validation_file is not set"):
        local.check_source(["train", "validation"])
    with pytest.raises(TaskDataError, match="task.test_file is not set"):
        local.load("test")
    with pytest.raises(TaskDataError, match="no 'dev' split"):
        local.check_source(["dev"])
    bad = tmp_path / "data.xml"
    bad.write_text("<x/>")
    with pytest.raises(TaskDataError, match="has type '.xml'"):
        _task(train_file=str(bad)).check_source()


def test_score_passes_reference_groups_to_the_e2e_scorer(fake_metric):
    calls = fake_metric("e2e", "score_e2e", {"BLEU": 0.5, "NIST": 1.0, "METEOR": 0.3, "ROUGE_L": 0.6, "CIDEr": 2.0})
    task = _task()
    from lora_ft.tasks.base import Example

    items = task.eval_items([Example("mr A", " ref 1"), Example("mr B", " ref 2"), Example("mr A", " ref 3")])
    assert task.score(["out A", "out B"], items) == {"BLEU": 0.5, "NIST": 1.0, "METEOR": 0.3, "ROUGE_L": 0.6, "CIDEr": 2.0}
    (args, kwargs), = calls
    assert args == (["out A", "out B"], [["ref 1", "ref 3"], ["ref 2"]])
    assert kwargs == {"meteor": True}
    with pytest.raises(ValueError, match="1 predictions for 2"):
        task.score(["only one"], items)


def test_unknown_hub_dataset_says_which_settings_to_check(monkeypatch, hub_up):
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    def missing(*args, **kwargs):
        raise DatasetNotFoundError("Dataset 'someone/e2e' doesn't exist on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", missing)
    with pytest.raises(TaskDataError, match=r"no dataset someone/e2e.*task.hub_id / task.hub_revision"):
        _task(hub_id="someone/e2e").load("train")


def test_unreachable_hub_fails_at_once_with_the_local_files_advice(monkeypatch):
    """No 25 s of datasets' retries: when the hub cannot be reached, the advice comes before load_dataset is called."""
    import datasets

    def must_not_be_called(*args, **kwargs):
        raise AssertionError("load_dataset called although the hub is unreachable")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("lora_ft.hub.hub_reachable", lambda: False)
    monkeypatch.setattr(datasets, "load_dataset", must_not_be_called)
    with pytest.raises(TaskDataError, match="task.train_file / task.validation_file / task.test_file"):
        _task().load("validation")
