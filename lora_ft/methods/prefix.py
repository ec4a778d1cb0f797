"""Prefix-embedding tuning (PreEmbed) and prefix-layer tuning (PreLayer), as the LoRA paper defines them (Section 5.1).

Every input carries l_p prefix and l_i infix *virtual tokens* (ids >= the model's vocabulary size; `lora_ft/data.py`
puts them in place: prefix first, infix between context and target).
- PreEmbed: the virtual tokens' embeddings train:                  |Theta| = d * (l_p + l_i).
- PreLayer: the activations at those positions entering every block are replaced by trainable ones:
                                                                    |Theta| = L * d * (l_p + l_i).

Initialisation (Li & Liang 2021: "initializing the prefix with activations of real words"): the virtual tokens start as
real vocabulary tokens, those of `method.init_text` or the task's cue words, each segment ending with them (`fill_segment`):
PreEmbed copies their embeddings (as the embedding module returns them: Gemma's are scaled); PreLayer copies the activations the frozen model computes for them entering every block,
so that at step 0 the model sees (nearly) a real text where the virtual tokens are, and starts near the base model's loss.
The prefix's activations are exact (causal attention: a sequence's first tokens see nothing after them); an infix token's
are those of its word after the init text's prefix words, not after each example's context (an approximation).

Hand-written rather than peft's prompt/prefix tuning: peft's prompt tuning has no infix, and peft's prefix tuning
learns per-layer keys and values (2 * L * d * l_p, Li & Liang) rather than the paper's replaced activations; it has also
broken repeatedly when transformers changed its KV cache (ecosystem.md). Replacing activations with hooks needs no cache
surgery: in incremental decoding the virtual positions are already in the cache.
"""

from __future__ import annotations

from collections.abc import Sequence
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
        w = base.weight
        self.virtual = nn.Parameter(torch.empty(num_virtual, w.shape[1], dtype=w.dtype, device=w.device)) if trainable_rows else None

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


def default_init_ids(vocab_size: int, count: int) -> list[int]:
    """Real token ids drawn reproducibly from the vocabulary: the fallback when no tokenizer gives `init_text`'s ids."""
    return torch.randperm(vocab_size, generator=torch.Generator().manual_seed(0))[:count].tolist()


def fill_segment(ids: Sequence[int], length: int, filler: Sequence[int] = ()) -> list[int]:
    """`length` ids ending with the init text's tokens `ids`: its last `length` tokens when it is longer, else `filler`
    tokens (a line break) before it. The text's end sits right before the context (prefix) or the target (infix), where a
    cue such as " Answer:" helps; repeating a short cue to fill a long prefix instead invites the model to continue the
    repetition (measured on SmolLM2, MNLI, base 5.41: PreLayer 8 + 8 starts at 8.01 repeated, 6.22 filled with line breaks;
    PreEmbed 256 + 8: 9.22 and 7.36). Without a filler the text repeats."""
    if not ids:
        raise ValueError("method.init_text gives no tokens; set it to a few real words (e.g. 'summarize')")
    if length <= len(ids):
        return list(ids[len(ids) - length :])
    pad = list(filler) or list(ids)
    missing = length - len(ids)
    return [pad[i % len(pad)] for i in range(missing)] + list(ids)


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
            hidden, w = arch.hidden_size(model.config), base.weight
            for block in arch.block_list(model):
                block.prefix_activations = nn.Parameter(torch.empty(num_virtual, hidden, dtype=w.dtype, device=w.device))
                block.register_forward_pre_hook(_replacing_hook(embedding), with_kwargs=True)
        self._model, self._arch = model, arch
        if w_is_real(base.weight):
            self.initialise(default_init_ids(embedding.vocab_size, num_virtual))

    def initialise(self, token_ids: Sequence[int], filler: Sequence[int] = ()) -> None:
        """Start the prefix and the infix as the real tokens `token_ids`, each segment filled to its length by
        `fill_segment` (`filler` before the text when the segment is longer).

        PreEmbed: their embeddings. PreLayer: the activations entering each block when the frozen model reads them
        (the prefix tokens alone, then prefix + infix, so the infix activations follow a prefix as in training).
        """
        model, arch = self._model, self._arch
        embedding: VirtualTokenEmbedding = model.get_submodule(arch.input_embedding)
        l_p, l_i = self.config.prefix_length, self.config.infix_length
        ids = fill_segment(token_ids, l_p, filler) + fill_segment(token_ids, l_i, filler)
        for i in ids:
            if not 0 <= i < embedding.vocab_size:
                raise ValueError(f"init token id {i} is outside the model's vocabulary (0..{embedding.vocab_size - 1})")
        device = embedding.base.weight.device
        with torch.no_grad():
            if not self.per_layer:  # what the embedding module returns: Gemma's scales its rows by sqrt(hidden)
                embedding.virtual.copy_(embedding.base(torch.tensor(ids, device=device)))
                return
            blocks = arch.block_list(model)
            activations = block_inputs(model, blocks, torch.tensor([ids], device=device))  # [L][1, l_p + l_i, d]
            for block, hidden in zip(blocks, activations):
                block.prefix_activations.copy_(hidden[0].to(block.prefix_activations.dtype))


def w_is_real(weight: torch.Tensor) -> bool:
    """False for shapes-only models (meta tensors): nothing to initialise from."""
    return weight.device.type != "meta"


def block_inputs(model: nn.Module, blocks: nn.ModuleList, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """The hidden states entering each block (before it) when `model` reads the real tokens `input_ids`."""
    captured: list[torch.Tensor] = []

    def capture(block, args, kwargs):
        captured.append((args[0] if args else kwargs["hidden_states"]).detach().clone())

    handles = [block.register_forward_pre_hook(capture, with_kwargs=True) for block in blocks]
    was_training = model.training
    try:
        model.eval()  # no dropout in the captured activations
        model(input_ids=input_ids, use_cache=False)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    # Pre-hooks fire in the order the blocks run; the replacing hooks were registered first and left these inputs alone
    # (no virtual ids here), so each capture is what the block itself reads.
    return captured[: len(blocks)]


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
