"""Bottleneck adapters: Adapter^H (Houlsby et al. 2019) and Adapter^L (Lin et al. 2020).

Hand-written: peft has no bottleneck adapters, and adapter-hub's `adapters` pins transformers 4.x (ecosystem.md).

- Adapter^H: two adapters per block, on the attention sublayer's output and on the MLP's output, before the residual add.
- Adapter^L: one adapter per block, on the MLP's output, with its own (trainable) LayerNorm in front.
An adapter is h + up(act(down(h))); `up` starts at zero so training starts from the pretrained model.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..models import Architecture
from .base import Method, freeze
from .configs import AdapterConfig

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class BottleneckAdapter(nn.Module):
    def __init__(self, hidden: int, bottleneck: int, activation: str, layer_norm: bool, factory: dict):
        super().__init__()
        self.layer_norm = nn.LayerNorm(hidden, **factory) if layer_norm else nn.Identity()
        self.down = nn.Linear(hidden, bottleneck, **factory)
        self.act = _ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, hidden, **factory)
        nn.init.zeros_(self.up.weight)  # near-identity start, as Houlsby et al.
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(self.layer_norm(h))))


class AdaptedOutput(nn.Module):
    """A frozen module followed by an adapter on its output."""

    def __init__(self, base_layer: nn.Module, adapter: BottleneckAdapter):
        super().__init__()
        self.base_layer = base_layer
        self.adapter = adapter

    def forward(self, *args, **kwargs):
        return self.adapter(self.base_layer(*args, **kwargs))


class _Adapters(Method):
    # Which sublayer outputs get an adapter, and whether it has its own LayerNorm.
    sites: ClassVar[tuple[str, ...]]
    layer_norm: ClassVar[bool]
    Config = AdapterConfig

    def apply(self, model: nn.Module, arch: Architecture) -> None:
        freeze(model)
        hidden = arch.hidden_size(model.config)
        for block in arch.block_list(model):
            for site in self.sites:
                path = getattr(arch, site)
                base = block.get_submodule(path)
                weight = next(base.parameters())  # a Linear's weight, or a MoE block's first parameter
                factory = {"device": weight.device, "dtype": weight.dtype}
                adapter = BottleneckAdapter(hidden, self.config.bottleneck, self.config.activation, self.layer_norm, factory)
                block.set_submodule(path, AdaptedOutput(base, adapter))

    def size_label(self) -> str:
        return f"bottleneck={self.config.bottleneck}"


class AdapterH(_Adapters):
    name = "adapter_h"
    label = "Adapter^H"
    sites = ("attention_output", "mlp_output")
    layer_norm = False


class AdapterL(_Adapters):
    name = "adapter_l"
    label = "Adapter^L"
    sites = ("mlp_output",)
    layer_norm = True
