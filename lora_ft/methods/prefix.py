"""Prefix-embedding tuning (PreEmbed) and prefix-layer tuning (PreLayer), as the LoRA paper defines them (Section 5.1).

Every input carries l_p prefix and l_i infix *virtual tokens* (ids >= the model's vocabulary size; `lora_ft/data.py`
puts them in place: prefix first, infix between context and target).
- PreEmbed: the virtual tokens' embeddings train:                  |Theta| = d * (l_p + l_i).
- PreLayer: the activations at those positions entering every block are replaced by trainable ones:
                                                                    |Theta| = L * d * (l_p + l_i).

Hand-written rather than peft's prompt/prefix tuning: peft's prompt tuning has no infix, and peft's prefix tuning
learns per-layer keys and values (2 * L * d * l_p, Li & Liang) rather than the paper's replaced activations; it has also
broken repeatedly when transformers changed its KV cache (ecosystem.md). Replacing activations with hooks needs no cache
surgery: in incremental decoding the virtual positions are already in the cache.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..models import Architecture
from .base import Method, freeze
from .configs import PrefixConfig


class VirtualTokenEmbedding(nn.Module):
    """The model's token embedding, extended by `num_virtual` ids past its vocabulary.

    Records, for every forward, which positions hold which virtual token (`slots`, -1 elsewhere) so that per-layer
    hooks (PreLayer) can find them. With `trainable_rows` (PreEmbed) the virtual ids look up their own trained vectors.
    """

    def __init__(self, base: nn.Embedding, num_virtual: int, trainable_rows: bool):
        super().__init__()
        self.base = base
        self.vocab_size = base.num_embeddings
        self.num_virtual = num_virtual
        self.slots: torch.Tensor | None = None
        if trainable_rows:
            w = base.weight
            # Start from the embeddings of real tokens (Li & Liang found real-word init trains best), drawn reproducibly.
            picks = torch.randperm(self.vocab_size, generator=torch.Generator().manual_seed(0))[:num_virtual]
            init = w[picks.to(w.device)].detach().clone() if w.device.type != "meta" else torch.empty_like(w[:num_virtual])
            self.virtual = nn.Parameter(init)
        else:
            self.virtual = None

    @property
    def weight(self) -> torch.Tensor:  # transformers reads `get_input_embeddings().weight` (e.g. for dtype)
        return self.base.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        is_virtual = input_ids >= self.vocab_size
        self.slots = torch.where(is_virtual, input_ids - self.vocab_size, -1)
        embedded = self.base(torch.where(is_virtual, 0, input_ids))
        if self.virtual is None or not bool(is_virtual.any()):
            return embedded
        return torch.where(is_virtual[..., None], self.virtual[self.slots.clamp(min=0)].to(embedded.dtype), embedded)


class _Prefix(Method):
    Config = PrefixConfig
    per_layer: ClassVar[bool]

    def virtual_token_counts(self) -> tuple[int, int]:
        return (self.config.prefix_length, self.config.infix_length)

    def size_label(self) -> str:
        return f"l_p={self.config.prefix_length}, l_i={self.config.infix_length}"

    def apply(self, model: nn.Module, arch: Architecture) -> None:
        freeze(model)
        num_virtual = self.config.prefix_length + self.config.infix_length
        base = model.get_submodule(arch.input_embedding)
        embedding = VirtualTokenEmbedding(base, num_virtual, trainable_rows=not self.per_layer)
        model.set_submodule(arch.input_embedding, embedding)
        if self.per_layer:
            hidden = arch.hidden_size(model.config)
            w = base.weight
            # Small random init at the embeddings' scale; activations deeper in the model are larger, and training
            # adjusts them quickly (Li & Liang: PreLayer is robust to init when trained with its reparametrisation).
            std = float(w.float().std()) if w.device.type != "meta" else 0.02
            for block in arch.block_list(model):
                block.prefix_activations = nn.Parameter(
                    torch.randn(num_virtual, hidden, dtype=w.dtype, device=w.device) * std
                    if w.device.type != "meta" else torch.empty(num_virtual, hidden, device="meta")
                )
                block.register_forward_pre_hook(_replacing_hook(embedding), with_kwargs=True)


def _replacing_hook(embedding: VirtualTokenEmbedding):
    """A forward pre-hook for a block: virtual positions of its input hidden states become trained activations."""

    def hook(block, args, kwargs):
        slots = embedding.slots
        if slots is None or not bool((slots >= 0).any()):
            return None
        if args:
            hidden, rest = args[0], args[1:]
        else:
            hidden, rest = kwargs.pop("hidden_states"), ()
        if hidden.shape[:2] != slots.shape:  # a later decoding step: the virtual positions are cached already
            return None
        trained = block.prefix_activations[slots.clamp(min=0)].to(hidden.dtype)
        hidden = torch.where((slots >= 0)[..., None], trained, hidden)
        if rest or args:
            return (hidden, *rest), kwargs
        kwargs["hidden_states"] = hidden
        return args, kwargs

    return hook


class PreEmbed(_Prefix):
    name = "preembed"
    label = "PreEmbed"
    per_layer = False


class PreLayer(_Prefix):
    name = "prelayer"
    label = "PreLayer"
    per_layer = True
