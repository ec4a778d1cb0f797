"""What `--resume` needs besides the trained tensors (optimizer, scheduler, RNG), stored as safetensors + JSON.

Never pickle: a run directory is a place other people and tools write to, and unpickling a file from it runs whatever
code the file names. Instead a state (a nested dict/list/tuple of tensors, numbers, strings, None) is split in two:
every tensor goes to `<stem>.safetensors` (bytes only, exact dtype and shape), everything else to `<stem>.json`, where a
tensor is `{"__tensor__": key}`, a tuple `{"__tuple__": [...]}` and a dict with non-string keys (an optimizer's
per-parameter state is keyed by int) `{"__items__": [[key, value], ...]}`. Decoding rebuilds the same Python types, so
`load_state_dict` gets back exactly what `state_dict` gave, for torch's AdamW and for any optimizer whose state has
this shape. Hand-written rather than a library's because safetensors holds tensors only and JSON has no tuples,
int keys or tensors.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_output, write_bytes_atomic

STATE_FORMAT = "lora-ft-state/1"
_TENSOR, _TUPLE, _ITEMS = "__tensor__", "__tuple__", "__items__"
_MARKERS = (_TENSOR, _TUPLE, _ITEMS)


class StateFormatError(ValueError):
    """A state file that parses but does not hold what `save_state` writes."""


def _encode(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        key = path if path not in tensors else f"{path}#{len(tensors)}"
        tensors[key] = value.detach().cpu().contiguous()
        return {_TENSOR: key}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and k not in _MARKERS for k in value):
            return {k: _encode(v, f"{path}.{k}", tensors) for k, v in value.items()}
        return {_ITEMS: [[_encode(k, f"{path}.key", tensors), _encode(v, f"{path}.{k}", tensors)] for k, v in value.items()]}
    raise TypeError(f"cannot store a {type(value).__name__} (at {path!r}) in a checkpoint: only tensors, numbers, "
                    "strings, None, lists, tuples and dicts")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {_TENSOR}:
        if value[_TENSOR] not in tensors:
            raise StateFormatError(f"tensor {value[_TENSOR]!r} is missing from the tensor file")
        return tensors[value[_TENSOR]]
    if set(value) == {_TUPLE}:
        return tuple(_decode(v, tensors) for v in value[_TUPLE])
    if set(value) == {_ITEMS}:
        if not all(isinstance(item, list) and len(item) == 2 for item in value[_ITEMS]):
            raise StateFormatError(f"{_ITEMS} must hold [key, value] pairs")
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value[_ITEMS]}
    return {k: _decode(v, tensors) for k, v in value.items()}


def save_state(state: Any, directory: Path, stem: str) -> list[str]:
    """Write `state` as `<stem>.json` (+ `<stem>.safetensors` when it holds tensors); returns the file names written."""
    tensors: dict[str, torch.Tensor] = {}
    document = {"format": STATE_FORMAT, "state": _encode(state, stem, tensors)}
    names = []
    if tensors:
        with atomic_output(directory / f"{stem}.safetensors", overwrite=True) as tmp:
            save_file(tensors, str(tmp))
        names.append(f"{stem}.safetensors")
    document["tensor_file"] = names[0] if names else None
    # Python's float repr round-trips exactly; NaN/inf (allowed here) come back as the same floats.
    write_bytes_atomic(directory / f"{stem}.json", json.dumps(document).encode("utf-8"), overwrite=True)
    return [*names, f"{stem}.json"]


def load_state(directory: Path, stem: str) -> Any:
    """Read what `save_state` wrote. Raises OSError or ValueError (bad JSON, StateFormatError)."""
    document = json.loads((directory / f"{stem}.json").read_text(encoding="utf-8"))
    if not isinstance(document, dict) or document.get("format") != STATE_FORMAT:
        raise StateFormatError(f"not a {STATE_FORMAT} file")
    tensor_file = document.get("tensor_file")
    if tensor_file not in (None, f"{stem}.safetensors"):
        raise StateFormatError(f"names an unexpected tensor file {tensor_file!r}")
    try:
        tensors = load_file(str(directory / tensor_file)) if tensor_file else {}
    except SafetensorError as exc:
        raise StateFormatError(f"{tensor_file}: {exc}") from exc
    return _decode(document.get("state"), tensors)


# -- random number generators ----------------------------------------------------------------------------------------


def rng_state() -> dict:
    """This process's Python, NumPy, torch CPU and CUDA generator states, in types `save_state` stores exactly."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state = {
        "python": random.getstate(),
        "numpy": (name, [int(k) for k in keys], int(position), int(has_gauss), float(cached_gaussian)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
