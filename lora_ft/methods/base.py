"""The contract every adaptation method fulfils. Methods know models (through `Architecture`), never tasks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from torch import nn

from ..models import Architecture
from .configs import MethodConfig


class NeedsWeights(RuntimeError):
    """A method cannot apply to a shapes-only (meta) model: its initialisation reads the base weights."""


class Method(ABC):
    """One adaptation method. Subclasses set `name`, `label`, `Config` and implement `apply`.

    To add a method: write its config dataclass in `lora_ft/methods/configs.py`, a `Method` subclass in
    `lora_ft/methods/<name>.py`, and register both in `lora_ft/methods/__init__.py`.
    """

    name: ClassVar[str]  # the key configs use: `method.name`
    label: ClassVar[str]  # as the paper's tables print it
    Config: ClassVar[type[MethodConfig]]
    # True when the trained parameters can be folded into the base weights (zero inference latency).
    mergeable: ClassVar[bool] = False

    def __init__(self, config: MethodConfig):
        self.config = config

    @abstractmethod
    def apply(self, model: nn.Module, arch: Architecture) -> None:
        """Freeze `model` and add or unfreeze exactly this method's trainable parameters, in place."""

    def check(self, model_config, arch: Architecture) -> None:
        """Pre-flight against the model's config (before any weights load); raise ConfigError if impossible."""
        self.config.check_architecture(arch, model_config)

    def virtual_token_counts(self) -> tuple[int, int]:
        """(prefix, infix) slots this method needs in every input; prefix methods override."""
        return (0, 0)

    def checkpoint_metadata(self, model: nn.Module) -> dict[str, str]:
        """Strings a reader of the saved trained tensors needs beyond their names and shapes (stored in
        trained.safetensors' metadata); methods whose tensors need none keep this default."""
        return {}

    def results_record(self) -> dict:
        """What results.json's `extra` records about the applied method beyond its config (peft: its resolved config)."""
        return {}

    def size_label(self) -> str:
        """The method's size as a table prints it, e.g. "r=4"; empty when the method has no size."""
        return ""

    def merge(self, model: nn.Module) -> None:
        """Fold trained parameters into the base weights (only mergeable methods)."""
        if not self.mergeable:
            raise NotImplementedError(f"{self.name} cannot be merged into the base weights")

    def unmerge(self, model: nn.Module) -> None:
        if not self.mergeable:
            raise NotImplementedError(f"{self.name} cannot be merged into the base weights")


def freeze(model: nn.Module) -> None:
    model.requires_grad_(False)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total), each shared tensor (e.g. GPT-2's tied LM head) counted once."""
    trainable = total = 0
    for p in model.parameters():  # .parameters() already de-duplicates shared tensors
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total
