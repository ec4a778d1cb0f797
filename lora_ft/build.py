"""From a run config to an adapted model: the base model, its architecture facts and the method applied."""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .config import RunConfig
from .errors import UserError
from .methods import build_method, count_parameters
from .methods.base import Method, NeedsWeights
from .models import Architecture, architecture_for
from .models.loading import build_model, load_model, load_model_config

logger = logging.getLogger("lora_ft.build")

# results.json `extra` key (and the lora-ft export's record) of `random_base_fingerprint` of a random_init run.
RANDOM_BASE_KEY = "random_base_sha256"


class RebuildError(UserError):
    """A run's model cannot be rebuilt as it was trained (a random_init base drawn differently)."""


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
    """`weights`: "pretrained" (load them, or random when model.random_init), "meta" (shapes only, for counting), or
    "random" (random values: counting a method whose initialisation reads the base weights)."""
    model_config = preflight(cfg)
    arch = architecture_for(model_config)
    if weights in ("meta", "random"):
        model = build_model(cfg.model, model_config, device="meta" if weights == "meta" else None)
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


def seeded_adapted_model(cfg: RunConfig) -> AdaptedModel:
    """`adapted_model` with torch's generator seeded from training.seed first: how training builds its model and how
    eval and export rebuild it (`rebuilt_model`), so that a random_init base, which exists nowhere but in this draw, and
    the method's random initial values are the same in all three."""
    torch.manual_seed(cfg.training.seed)
    return adapted_model(cfg)


def seeded_base_model(cfg: RunConfig) -> nn.Module:
    """The base model alone, as `seeded_adapted_model` draws it (loading the base is adapted_model's first draw);
    the caller's RNG state is kept."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.training.seed)
        return load_model(cfg.model)


def base_fingerprint(cfg: RunConfig) -> str:
    """`random_base_fingerprint` of the base model alone, frozen, as `seeded_base_model` draws it: what a peft export
    of a random_init run records, and what `eval --adapter` checks it against (scored_model.py)."""
    return random_base_fingerprint(seeded_base_model(cfg).requires_grad_(False))


def random_base_fingerprint(model: nn.Module) -> str:
    """sha256 over the name, shape and first 4096 values of every tensor training leaves as it is: tells whether a
    rebuilt random_init base is the one a run trained on. The first values suffice (another draw changes every value)
    and cost nothing even for a 7B-shaped model."""
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name in trained:
            continue
        head = tensor.detach().reshape(-1)[:4096].cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(head.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def rebuilt_model(cfg: RunConfig, *, trained_in: str | Path | None = None, recorded: str | None = None) -> AdaptedModel:
    """eval and export: the run's model as training built it, before trained tensors are loaded; the caller's RNG
    state is kept. `trained_in`: where the trained tensors that will be loaded come from (None: the model stays
    untrained). For a random_init run, `recorded` is the fingerprint of the base that training drew (results.json): a
    base drawn differently here (another torch or transformers) is refused in one line, since the trained tensors
    would then sit on weights they never saw; without one (runs trained before it was recorded) it is rebuilt
    unchecked."""
    with torch.random.fork_rng(devices=[]):
        adapted = seeded_adapted_model(cfg)
    if cfg.model.random_init and trained_in is not None:
        if recorded is None:
            logger.warning("%s: its random base weights (model.random_init) are drawn again from training.seed %d as "
                           "training draws them, unchecked (the run predates the recorded fingerprint)", trained_in,
                           cfg.training.seed)
        elif random_base_fingerprint(adapted.model) != recorded:
            raise RebuildError(
                f"{trained_in} was trained on random weights (model.random_init) that this installation does not draw "
                f"again from training.seed {cfg.training.seed} (another torch or transformers version?); evaluate or "
                "export it with the versions it was trained with (results.json: environment)"
            )
    return adapted


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
    """Parameter counts of the adapted model without loading (or even allocating) any weights; a peft method adds
    peft's own count (`trainable_by_peft`, checked equal when it applies)."""
    with torch.no_grad():
        try:
            adapted = adapted_model(cfg, weights="meta")
        except NeedsWeights as exc:  # a peft type whose init decomposes the base weights (FROD, SHIRA): random values
            logger.info("%s; counting on random weights", exc)
            adapted = adapted_model(cfg, weights="random")
        report = parameter_report(adapted.model)
        if hasattr(adapted.method, "peft_trainable"):
            report["trainable_by_peft"] = adapted.method.peft_trainable
        return report
