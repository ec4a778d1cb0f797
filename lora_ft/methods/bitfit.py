"""BitFit (Ben Zaken et al. 2021): only the bias vectors train, LayerNorm biases included."""

from __future__ import annotations

from torch import nn

from ..models import Architecture
from .base import Method, freeze
from ..schema import ConfigError
from .configs import BitFitConfig


class BitFit(Method):
    name = "bitfit"
    label = "BitFit"
    Config = BitFitConfig
    mergeable = True  # the trained biases are the model's own: nothing to fold

    def apply(self, model: nn.Module, arch: Architecture) -> None:
        freeze(model)
        biases = [p for name, p in model.named_parameters() if name.endswith(".bias")]
        if not biases:  # pre-flight (BitFitConfig.check_architecture) refuses this before any weights load
            raise ConfigError(f"method.name: bitfit cannot apply: this {arch.name} model has no bias vectors, and BitFit "
                              "trains only those; choose another method")
        for p in biases:
            p.requires_grad_(True)

    def merge(self, model: nn.Module) -> None:
        pass

    def unmerge(self, model: nn.Module) -> None:
        pass
