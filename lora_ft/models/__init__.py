"""Model families (one file each) and model loading.

To support a new family: add `<family>.py` with one `Architecture`, and list it in `ARCHITECTURES` below.
"""

from __future__ import annotations

from pathlib import Path

from .architecture import WEIGHT_ALIASES, WEIGHT_NAMES, Architecture, WeightLocation
from .gemma import GEMMA
from .gpt2 import GPT2
from .gptj import GPTJ
from .llama import LLAMA
from .mixtral import MIXTRAL
from .neox import NEOX
from .opt import OPT
from .phi3 import PHI3
from .qwen2_moe import QWEN2_MOE
from ..errors import UserError

ARCHITECTURES: tuple[Architecture, ...] = (GPT2, LLAMA, OPT, NEOX, GPTJ, PHI3, GEMMA, MIXTRAL, QWEN2_MOE)


class UnsupportedArchitectureError(UserError, ValueError):
    pass


def architecture_for(config_or_model) -> Architecture:
    """The family of a transformers config (or model), by `model_type`."""
    config = getattr(config_or_model, "config", config_or_model)
    model_type = getattr(config, "model_type", None)
    for arch in ARCHITECTURES:
        if model_type in arch.model_types:
            return arch
    supported = ", ".join(t for arch in ARCHITECTURES for t in arch.model_types)
    raise UnsupportedArchitectureError(
        f"model_type {model_type!r} is not supported; supported model types: {supported}. "
        "To add a family, write lora_ft/models/<family>.py (see gpt2.py) and register it in lora_ft/models/__init__.py."
    )


__all__ = [
    "ARCHITECTURES", "Architecture", "WeightLocation", "WEIGHT_NAMES", "WEIGHT_ALIASES",
    "UnsupportedArchitectureError", "architecture_for", "architecture_for_type", "quick_model_config", "quick_model_type",
]


def quick_model_config(name_or_path: str) -> dict | None:
    """The model's config.json as a mapping when it can be read without importing transformers (shipped shapes, a
    local folder, a hub id already in the local hub cache, the GGUF alias's cache, or at least the alias's model type);
    None when only loading can tell (a hub id not cached, another GGUF file). Keeps config validation fast. A damaged config.json is a ModelLoadError."""

    from .loading_paths import (
        SHAPES_DIR, SHIPPED_SHAPES, SMOLLM2_ALIAS, SMOLLM2_FILE, SMOLLM2_MODEL_TYPE, gguf_cache_dir, read_config_json,
    )

    if name_or_path in SHIPPED_SHAPES:
        config_file = SHAPES_DIR / SHIPPED_SHAPES[name_or_path]
    elif name_or_path == SMOLLM2_ALIAS:
        config_file = gguf_cache_dir(SMOLLM2_FILE) / "config.json"
        if not config_file.is_file():
            return {"model_type": SMOLLM2_MODEL_TYPE}
    else:
        config_file = Path(name_or_path).expanduser() / "config.json"
        if not config_file.is_file() and _looks_like_hub_id(name_or_path):
            config_file = _hub_cached_config(name_or_path) or config_file
    return read_config_json(config_file) if config_file.is_file() else None


def _looks_like_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).exists()


def _hub_cached_config(repo_id: str) -> Path | None:
    """config.json of a hub model already in the local hub cache (no network); None if it is not there."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json")
    return Path(cached) if isinstance(cached, str) else None


def quick_model_type(name_or_path: str) -> str | None:
    """The `model_type` when it can be read without importing transformers (see `quick_model_config`)."""
    config = quick_model_config(name_or_path)
    return config.get("model_type") if config else None


def architecture_for_type(model_type: str) -> Architecture:
    class _Config:
        pass

    config = _Config()
    config.model_type = model_type
    return architecture_for(config)
