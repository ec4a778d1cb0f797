"""The task registry: `get_task(config.task)` -> a Task for e2e | wikisql | mnli | samsum, or custom (your own data)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import EvalItem, Example, Task, TaskDataError
from .custom import SETTINGS as CUSTOM_SETTINGS
from .custom import CustomTask
from .e2e import E2ETask
from .mnli import MNLITask
from .samsum import SAMSumTask
from .wikisql import WikiSQLTask

if TYPE_CHECKING:
    from ..config import TaskConfig

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (E2ETask, WikiSQLTask, MNLITask, SAMSumTask, CustomTask)}


def get_task(config: TaskConfig) -> Task:
    """The task named by `config.name`, configured by the whole task section."""
    try:
        cls = TASKS[config.name]
    except KeyError:
        raise TaskDataError(f"unknown task {config.name!r}; known tasks: {', '.join(TASKS)}") from None
    stray = [f"task.{key}" for key in CUSTOM_SETTINGS if cls is not CustomTask and getattr(config, key, None)]
    if stray:  # a built-in task has its own format: a template set for it would be silently ignored
        raise TaskDataError(f"{', '.join(stray)} apply to task.name: custom only; the {config.name} task formats its "
                            "own rows (see lora_ft/tasks)")
    return cls(config)


__all__ = ["TASKS", "EvalItem", "Example", "Task", "TaskDataError", "get_task"]
