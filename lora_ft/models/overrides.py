"""Checking `model.config_overrides` and the model's shape before any model is built (no torch: `config validate`
runs these on the config.json mapping, pre-flight on the transformers config).

Why by hand: transformers checks a field's type only when it is set (and not every field), and checks the shape
(hidden size against heads, a positive number of blocks) only deep inside model construction, or never: a GPT-2 with
n_layer -2 builds and trains with no blocks at all.
"""

from __future__ import annotations

from typing import Any

from ..schema import ConfigError
from .architecture import Architecture, config_value


def check_override_value(key: str, current: Any, value: Any) -> None:
    """`value` must have the type of the field's current value (an int is fine for a float); None: anything goes."""
    where = f"model.config_overrides.{key}"
    if current is None or value is None:
        return
    if isinstance(current, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(current, int):
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(current, float):
        ok, expected = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(current, str):
        ok, expected = isinstance(value, str), "a string"
    else:
        return
    if not ok:
        raise ConfigError(f"{where}: expected {expected} (the model's value is {current!r}), got {value!r}")


def check_overrides(config, overrides: dict[str, Any]) -> None:
    """Each override against the field it replaces in `config` (a transformers config or its config.json mapping).
    Fields a config.json mapping does not list are left to the full check on the transformers config."""
    for key, value in overrides.items():
        check_override_value(key, config_value(config, key), value)


def check_shape(arch: Architecture, config, overrides: dict[str, Any]) -> None:
    """Blocks, width and heads are positive integers, and the width splits evenly over the heads (unless the config
    states head_dim, as Qwen3's does). `config` has the overrides applied; the message names the key to fix."""
    def where(key: str) -> str:
        return f"model.config_overrides.{key}" if key in overrides else f"the model's {key}"

    for key in (arch.num_layers_key, arch.hidden_size_key, arch.num_heads_key):
        value = config_value(config, key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"{where(key)} must be a positive integer, got {value!r}")
    hidden, heads = config_value(config, arch.hidden_size_key), config_value(config, arch.num_heads_key)
    if hidden and heads and config_value(config, "head_dim") is None and hidden % heads:
        key = arch.hidden_size_key if arch.hidden_size_key in overrides else arch.num_heads_key
        raise ConfigError(
            f"{where(key)}: {arch.hidden_size_key} ({hidden}) must be divisible by {arch.num_heads_key} ({heads}); "
            f"e.g. {arch.hidden_size_key}: {hidden - hidden % heads or heads}"
        )
