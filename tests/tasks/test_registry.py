"""The task registry."""

from __future__ import annotations

import pytest

from lora_ft.config import TASK_NAMES, TaskConfig
from lora_ft.tasks import TASKS, get_task
from lora_ft.tasks.base import Task, TaskDataError


def test_every_task_is_registered_and_complete():
    assert set(TASKS) == {"e2e", "wikisql", "mnli", "samsum", "custom"}
    for name, cls in TASKS.items():
        # the custom task's format is the config's (its prompt, target and metric: tests/tasks/test_task_custom.py)
        settings = {"prompt": "{q}\nA:", "target": "a", "metric": "bleu"} if name == "custom" else {}
        task = get_task(TaskConfig(name=name, **settings))
        assert isinstance(task, Task) and task.name == name
        assert task.primary_metric in task.metric_names
        assert cls.separator_eos is (name == "e2e")


def test_config_knows_the_registered_task_names():
    # config.py keeps the names itself (importing the registry would be an import circle): they must agree.
    assert tuple(TASKS) == TASK_NAMES


def test_a_task_refuses_another_tasks_config():
    with pytest.raises(TaskDataError, match="use get_task"):
        TASKS["mnli"](TaskConfig(name="e2e"))


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(TaskDataError, match="unknown task 'glue'; known tasks: e2e, wikisql, mnli, samsum, custom"):
        get_task(TaskConfig(name="glue"))
