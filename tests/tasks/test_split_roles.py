"""Training, selection and scored rows never overlap (issue 16, item 1): E2E slices cut between MRs, MNLI can take all
three parts from one file, and a config whose parts share rows is refused before any data or model is read."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lora_ft.config import TaskConfig, load_config
from lora_ft.tasks import TaskDataError, get_task

REPO = Path(__file__).resolve().parents[2]


def e2e(shared_data_dir, **task):
    valid = str(shared_data_dir / "e2e" / "valid.txt")
    return get_task(TaskConfig(name="e2e", train_file=valid, validation_file=valid,
                               test_file=str(shared_data_dir / "e2e" / "test.txt"), **task))


def test_e2e_slices_count_mrs_so_no_mr_straddles_a_cut(shared_data_dir):
    task = e2e(shared_data_dir, train_slice="0:5", validation_slice="5:8")
    train, selection = task.load("train"), task.load("validation")
    every = e2e(shared_data_dir).load("train")
    mrs = list(dict.fromkeys(e.context for e in every))
    assert list(dict.fromkeys(e.context for e in train)) == mrs[:5]
    assert list(dict.fromkeys(e.context for e in selection)) == mrs[5:8]
    # every reference of each MR, and nothing else: the first rows of the file, in order
    assert train + selection == every[: len(train) + len(selection)]
    assert len(train) > 5  # E2E MRs have several references each: rows are not MRs


def test_mnli_three_disjoint_slices_of_one_file(mnli_file):
    path = str(mnli_file)
    task = get_task(TaskConfig(name="mnli", train_file=path, validation_file=path, test_file=path,
                               train_slice="0:20", validation_slice="20:30", test_slice="30:45"))
    task.check_split_roles("test")
    every = get_task(TaskConfig(name="mnli", validation_file=path, validation_slice="0:45")).load("validation")
    assert task.load("train") + task.load("validation") + task.load("test") == every


@pytest.mark.parametrize(
    "slices, scored, message",
    [
        ({"train_slice": "0:20", "validation_slice": "10:30", "test_slice": "30:40"}, "test",
         "training rows would be used for selection: task.train_slice '0:20' and task.validation_slice '10:30' overlap"),
        ({"train_slice": "0:20", "validation_slice": "20:30", "test_slice": "25:40"}, "test",
         "the selection (validation) split overlaps the scored split (test): task.validation_slice '20:30' and "
         "task.test_slice '25:40' overlap"),
        ({"train_slice": "0:20", "validation_slice": "20:30", "test_slice": ":40"}, "test",
         "training rows would be scored"),
        ({"train_slice": "0:20", "eval_slice": "20:30"}, "test",
         "task.eval_slice '20:30' and task.eval_slice '20:30' overlap"),  # the default of both: one range
        ({"train_slice": "0:20", "validation_slice": "20:30"}, "validation",
         "decoding.split is 'validation', the split whose loss selects epochs"),
    ],
)
def test_overlapping_parts_are_refused(mnli_file, slices, scored, message):
    path = str(mnli_file)
    task = get_task(TaskConfig(name="mnli", train_file=path, validation_file=path, test_file=path, **slices))
    with pytest.raises(TaskDataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        task.check_split_roles(scored)


def test_selecting_on_the_scored_split_only_when_asked(mnli_file):
    """The paper's MNLI/WikiSQL numbers are dev-set scores: allowed with task.select_on_scored_split, never by default;
    training rows stay refused even then."""
    path = str(mnli_file)
    config = dict(name="mnli", train_file=path, validation_file=path, train_slice="0:20", validation_slice="20:30")
    get_task(TaskConfig(**config, select_on_scored_split=True)).check_split_roles("validation")
    with pytest.raises(TaskDataError, match="training rows would be scored"):
        get_task(TaskConfig(**{**config, "validation_slice": "10:30"}, select_on_scored_split=True)).check_split_roles(
            "validation")
    # on the hub: validation_matched is both the selection and the scored split
    with pytest.raises(TaskDataError, match="select_on_scored_split"):
        get_task(TaskConfig(name="mnli")).check_split_roles("validation")
    get_task(TaskConfig(name="mnli", select_on_scored_split=True)).check_split_roles("validation")


def test_hub_splits_are_disjoint_parts(shared_data_dir):
    get_task(TaskConfig(name="e2e")).check_split_roles("test")
    get_task(TaskConfig(name="samsum")).check_split_roles("test")
    # a local training file beside hub evaluation splits shares no rows with them
    get_task(TaskConfig(name="e2e", train_file=str(shared_data_dir / "e2e" / "valid.txt"))).check_split_roles("test")


# The first mini-paper validated on its scored split; its configs say so (task.select_on_scored_split) so that its
# committed runs still reproduce, until mini-paper 2's final configs replace them (issue 16).
FIRST_MINI_PAPER = (REPO / "configs" / "mini" / "table3", REPO / "configs" / "mini" / "table4")


def committed_configs() -> list[Path]:
    """Every run config shipped under configs/, sweeps and mini-paper 2's searches included (not configs/accelerate/'s
    launcher configs)."""
    return sorted(p for p in (REPO / "configs").rglob("*.yaml") if "accelerate" not in p.relative_to(REPO).parts)


@pytest.mark.parametrize("path", committed_configs(), ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_committed_config_keeps_its_parts_apart(path, monkeypatch):
    """No shipped config trains on, selects on, or scores rows of another part; only the paper's dev-set configs
    (MNLI, WikiSQL on the hub) and the first mini-paper's select on their scored split; mini-paper 2's never do."""
    monkeypatch.chdir(REPO)  # configs name files relative to the repository
    cfg = load_config(path)
    get_task(cfg.task).check_split_roles(cfg.decoding.split)
    if cfg.task.select_on_scored_split:
        paper_dev_set = "mini" not in path.parts and cfg.task.name in ("mnli", "wikisql")
        assert paper_dev_set or path.parent in FIRST_MINI_PAPER, path
