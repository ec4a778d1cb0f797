"""Fine-tuning baselines: every parameter (FT), or only the top k blocks and the final norm (FT^Top2 for k = 2)."""

from __future__ import annotations

from torch import nn

from ..models import Architecture
from .base import Method, freeze
from .configs import FullFTConfig, TopKConfig


class FullFT(Method):
    name = "ft"
    label = "FT"
    Config = FullFTConfig
    mergeable = True  # the trained weights are the model itself

    def apply(self, model: nn.Module, arch: Architecture) -> None:
        model.requires_grad_(True)

    def merge(self, model: nn.Module) -> None:
        pass

    def unmerge(self, model: nn.Module) -> None:
        pass


class TopKFT(FullFT):
    name = "ft_top"
    label = "FT^Top"
    Config = TopKConfig

    def apply(self, model: nn.Module, arch: Architecture) -> None:
        freeze(model)
        for block in arch.block_list(model)[-self.config.top_k :]:
            block.requires_grad_(True)
        model.get_submodule(arch.final_norm).requires_grad_(True)

    def size_label(self) -> str:
        return f"top {self.config.top_k}"
