"""Saving and loading only what a method trained (a GPT-2 M LoRA r=4 run is about 1.5 MB), in safetensors."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from .methods.lora import checkpoint_metadata, lora_layers

TRAINED_FILE = "trained.safetensors"


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    # named_parameters() lists a tied tensor once (GPT-2's LM head is the token embedding).
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def save_trained(model: nn.Module, method_name: str, directory: Path) -> Path:
    """Write the trainable tensors to `directory/trained.safetensors` atomically; returns the path."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.contiguous().cpu() for name, t in trainable_state_dict(model).items()}
    metadata = {"method": method_name, "format": "lora-ft/1"}
    if lora_layers(model):
        metadata.update(checkpoint_metadata(model))
    path = directory / TRAINED_FILE
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def read_trained(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(directory) / TRAINED_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {directory} a finished lora-ft run or checkpoint?")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    return load_file(str(path)), metadata


def load_trained(model: nn.Module, directory: Path) -> None:
    """Load saved trained tensors into a model adapted with the same config; every trainable tensor must be there."""
    tensors, metadata = read_trained(directory)
    expected = set(trainable_state_dict(model))
    missing, unexpected = expected - set(tensors), set(tensors) - expected
    if missing or unexpected:
        raise ValueError(
            f"{directory}/{TRAINED_FILE} does not fit this model (method {metadata.get('method')!r}): "
            f"{len(missing)} trained tensors missing (e.g. {sorted(missing)[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {sorted(unexpected)[:2]}). Was it trained with another config?"
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)
