"""The task registry: `get_task(config.task)` -> a Task for e2e | wikisql | mnli | samsum."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import EvalItem, Example, Task, TaskDataError
from .e2e import E2ETask
from .mnli import MNLITask
from .samsum import SAMSumTask
from .wikisql import WikiSQLTask

if TYPE_CHECKING:
    from ..config import TaskConfig

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (E2ETask, WikiSQLTask, MNLITask, SAMSumTask)}


def get_task(config: TaskConfig) -> Task:
    """The task named by `config.name`, configured by the whole task section."""
    try:
        cls = TASKS[config.name]
    except KeyError:
        raise TaskDataError(f"unknown task {config.name!r}; known tasks: {', '.join(TASKS)}") from None
    return cls(config)


__all__ = ["TASKS", "EvalItem", "Example", "Task", "TaskDataError", "get_task"]
