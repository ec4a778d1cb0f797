"""Checks of a run config that need more than one field: against the task's data layout (file names and slices, no
data read) and, where the model's config.json can be read, against the model. No weights, no torch: `config validate`,
`params`, `eval --config` and `train` run them in milliseconds, before anything expensive."""

from __future__ import annotations

import difflib

from .config import TASK_NAMES, RunConfig
from .schema import ConfigError, require


def check_config(cfg: RunConfig) -> None:
    """Checks that need more than one field but no weights and no torch: the task's name, that the tokenizer's folder
    holds one; when the model's config.json can be read (shipped shapes, a local folder, the GGUF alias),
    `model.config_overrides`, the method (BitFit on a bias-free model, LoRA layers beyond the last block) and
    task.max_length against that model; last, that the training, selection and scored rows do not overlap. Raises
    ConfigError, ModelLoadError or TaskDataError (all UserErrors) naming the key; `config validate`, `params`, `eval
    --config` and `train` run it, in milliseconds."""
    from .models import quick_model_config
    from .models.loading_paths import ModelLoadError, tokenizer_source_problem
    from .tasks import get_task

    if cfg.task.name not in TASK_NAMES:
        close = difflib.get_close_matches(cfg.task.name, list(TASK_NAMES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{cfg.source}: task.name {cfg.task.name!r} is unknown{hint} (known: {', '.join(TASK_NAMES)})")
    problem = tokenizer_source_problem(cfg.model.tokenizer, cfg.model.name_or_path)
    if problem:
        raise ModelLoadError(problem)
    model_config = quick_model_config(cfg.model.name_or_path)
    if model_config is not None and "model_type" in model_config:
        check_model(cfg, model_config)
    get_task(cfg.task).check_split_roles(cfg.decoding.split)  # training, selection and scored rows kept apart


def check_model(cfg: RunConfig, model_config: dict) -> None:
    """model.config_overrides, the method and the positions against the model's config.json (a mapping)."""
    from .models import architecture_for_type
    from .models.overrides import check_overrides, check_shape

    arch = architecture_for_type(model_config["model_type"])
    overrides = cfg.model.config_overrides
    try:
        check_overrides(model_config, overrides)
        model_config = {**model_config, **overrides}
        check_shape(arch, model_config, overrides)
        cfg.method.config.check_architecture(arch, model_config)
        check_positions(cfg, model_config)
    except ConfigError as exc:
        raise ConfigError(f"{cfg.source}: {exc}") from None


def check_positions(cfg: RunConfig, model_config) -> None:
    """task.max_length and decoding.max_new_tokens against the model's positions (GPT-2: 1,024; `model_config` a
    transformers config or its config.json mapping): a longer sequence has no position embedding, and torch would stop
    with an IndexError deep inside the forward pass after the weights had loaded."""
    from .models.architecture import max_positions

    positions = max_positions(model_config)
    if positions is None:
        return
    model = cfg.model.name_or_path
    require(cfg.task.max_length <= positions,
            f"task.max_length {cfg.task.max_length} is more than the {positions} positions of the model {model}: "
            f"no example can be that long; set task.max_length={positions} or less")
    require(cfg.decoding.max_new_tokens < positions,
            f"decoding.max_new_tokens {cfg.decoding.max_new_tokens} leaves no room for a prompt in the {positions} "
            f"positions of the model {model}; set decoding.max_new_tokens below {positions}")
