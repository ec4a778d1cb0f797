"""From a run config to an adapted model: the base model, its architecture facts and the method applied."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from .config import RunConfig
from .methods import build_method, count_parameters
from .methods.base import Method
from .models import Architecture, architecture_for
from .models.loading import build_model, load_model, load_model_config


@dataclass
class AdaptedModel:
    model: nn.Module
    method: Method
    arch: Architecture


def preflight(cfg: RunConfig):
    """Everything checkable from configs alone (no weights): raises ValueError with the reason. Returns the model config."""
    model_config = load_model_config(cfg.model)
    arch = architecture_for(model_config)
    method = build_method(cfg.method.name, cfg.method.config)
    method.check(model_config, arch)
    return model_config


def adapted_model(cfg: RunConfig, *, weights: str = "pretrained") -> AdaptedModel:
    """`weights`: "pretrained" (load them, or random when model.random_init), or "meta" (shapes only, for counting)."""
    model_config = preflight(cfg)
    arch = architecture_for(model_config)
    if weights == "meta":
        model = build_model(cfg.model, model_config, device="meta")
    else:
        model = load_model(cfg.model)
    method = build_method(cfg.method.name, cfg.method.config)
    method.apply(model, arch)
    if hasattr(method, "initialise") and weights != "meta":
        # Prefix methods start as real words (Li & Liang): method.init_text, else the task's own cue words.
        from .models.loading import load_tokenizer
        from .tasks import get_task

        init_text = cfg.method.config.init_text or get_task(cfg.task).prefix_init_text
        if init_text:
            tokenizer = load_tokenizer(cfg.model)
            method.initialise(tokenizer.encode(init_text, add_special_tokens=False),
                              filler=tokenizer.encode("\n", add_special_tokens=False))
    return AdaptedModel(model, method, arch)


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """`training.gradient_checkpointing`: each block keeps only its input and recomputes the rest in backward.

    Non-reentrant checkpointing (torch.utils.checkpoint, use_reentrant=False) replays the dropout RNG, so the numbers
    are those without it (tests/test_gradient_checkpointing.py). It needs no input that requires grad, so the hook
    transformers adds for reentrant checkpointing with frozen embeddings (`enable_input_require_grads`) is removed:
    it would only make backward compute an unused gradient for the embedding output."""
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.disable_input_require_grads()


_LAYER_INDEX = re.compile(r"\.\d+\.")


def parameter_report(model: nn.Module) -> dict:
    """{"trainable", "total", "by_kind"}: by_kind sums trainable parameters per name with block indices wildcarded."""
    trainable, total = count_parameters(model)
    by_kind: Counter[str] = Counter()
    for name, p in model.named_parameters():
        if p.requires_grad:
            by_kind[_LAYER_INDEX.sub(".*.", name)] += p.numel()
    return {"trainable": trainable, "total": total, "by_kind": dict(by_kind)}


def count_for_config(cfg: RunConfig) -> dict:
    """Parameter counts of the adapted model without loading (or even allocating) any weights."""
    with torch.no_grad():
        return parameter_report(adapted_model(cfg, weights="meta").model)
