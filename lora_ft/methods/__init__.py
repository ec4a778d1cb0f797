"""Adaptation methods, one module each, behind one registry.

To add a method:
1. its config section: a dataclass in `configs.py` (fields with help text, checks in `__post_init__`);
2. its implementation: `<name>.py` with a `Method` subclass (see base.py) whose `apply` freezes the model and adds or
   unfreezes exactly its trainable parameters;
3. one line in `METHODS` below. Configs then select it with `method.name: <name>`.

The registry imports implementations lazily: reading and validating a config must not import torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .configs import (
    AdapterConfig,
    BitFitConfig,
    FullFTConfig,
    LoraConfig,
    MethodConfig,
    PeftMethodConfig,
    PrefixConfig,
    TopKConfig,
)

if TYPE_CHECKING:
    from .base import Method


@dataclass(frozen=True)
class MethodSpec:
    Config: type[MethodConfig]
    implementation: str  # "module:Class" inside lora_ft.methods
    label: str  # as the paper's tables print it


METHODS: dict[str, MethodSpec] = {
    "lora": MethodSpec(LoraConfig, "lora:LoRA", "LoRA"),
    "adapter_h": MethodSpec(AdapterConfig, "adapters:AdapterH", "Adapter^H"),
    "adapter_l": MethodSpec(AdapterConfig, "adapters:AdapterL", "Adapter^L"),
    "prelayer": MethodSpec(PrefixConfig, "prefix:PreLayer", "PreLayer"),
    "preembed": MethodSpec(PrefixConfig, "prefix:PreEmbed", "PreEmbed"),
    "bitfit": MethodSpec(BitFitConfig, "bitfit:BitFit", "BitFit"),
    "ft": MethodSpec(FullFTConfig, "finetune:FullFT", "FT"),
    "ft_top": MethodSpec(TopKConfig, "finetune:TopKFT", "FT^Top"),
    # any peft method lora-ft can train (peft_types.py), applied with peft's own get_peft_model
    "peft": MethodSpec(PeftMethodConfig, "peft_method:PeftMethod", "peft"),
}


def method_class(name: str) -> type[Method]:
    module, cls = METHODS[name].implementation.split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def build_method(name: str, config: MethodConfig) -> Method:
    return method_class(name)(config)


def count_parameters(model) -> tuple[int, int]:
    from .base import count_parameters as count

    return count(model)


__all__ = ["METHODS", "MethodSpec", "MethodConfig", "build_method", "method_class", "count_parameters"]
