"""`training.packing`: a batch's examples packed into one row, without padding, with the same numbers.

The collator right-pads a batch to its longest example (data.py); on E2E batches of 8 about a third of the
positions are padding, and every linear layer computes them. Packed, the batch's real tokens sit one example after
the other in a single row (1 x total tokens), with `position_ids` restarting at 0 at each example and no
`attention_mask`. Transformers (masking_utils.find_packed_sequence_indices, 5.x) reads the restarts as separate
sequences and builds a block-diagonal causal mask: each token attends to its own example's earlier tokens only, as
in the padded batch. Position embeddings (GPT-2's learned ones, rotary ones) see the same positions. So the logits at
every real position, the loss and the gradients are the padded batch's up to float rounding (different matrix
shapes sum in another order): tests/test_packing.py checks loss and every trained gradient within 1e-5 relative,
for every method and family, with dropout 0.

Dropout: packed and padded draw their random masks over different layouts (1 x T vs batch x length), so with
dropout on, a packed run sees other masks than a padded one: the same recipe in distribution, not the same numbers.

Where packing applies, in this one place:
- every method. The prefix methods' virtual tokens are ordinary positions at the start (and middle) of each example
  (data.py puts them there; methods/prefix.py replaces what sits at those positions), not past key values, so each
  packed example carries its own prefix, exactly as in its padded row.
- the families whose transformers code passes `position_ids` to `create_causal_mask` (`Architecture.packing`):
  GPT-2, LLaMA/Qwen/Mistral, GPT-NeoX, GPT-J. OPT does not (transformers 5.24): packed, its examples would see
  each other, so OPT trains padded (a test checks that packing OPT would indeed change its loss).
- the attention implementations whose mask follows the packed positions and that are tested here: "sdpa" (the
  default) and "eager". Others (flash attention, flex) train padded.
Elsewhere `training.packing: auto` trains padded batches (the log and results.json say why); `off` always does.

Length grouping (sorting a step's examples into micro-batches by length) is not offered: the loss is a token mean
per micro-batch (as the authors' code), so regrouping examples across micro-batches would change the numbers, and
with one micro-batch per forward there is nothing left to group once a batch is packed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from accelerate.utils import extract_model_from_parallel
from torch import nn

from .data import IGNORE_INDEX
from .models import architecture_for

__all__ = ["PACKED_ATTENTION", "ModelBatch", "Packing", "pack", "padded", "packing_for"]

# Attention implementations whose packed mask is tested exact (tests/test_packing.py).
PACKED_ATTENTION = ("sdpa", "eager")


@dataclass(frozen=True)
class ModelBatch:
    """What one forward needs: the model's keyword arguments, the labels aligned with `inputs["input_ids"]`, and the
    padded batch's row (example) of every position (validation sums losses per example)."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    example: torch.Tensor


def padded(batch: dict[str, torch.Tensor]) -> ModelBatch:
    """The collator's padded batch as it is (the reference layout)."""
    labels = batch["labels"]
    example = torch.arange(labels.shape[0], device=labels.device)[:, None].expand_as(labels)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
    return ModelBatch(inputs, labels, example)


def pack(batch: dict[str, torch.Tensor]) -> ModelBatch:
    """The batch's real tokens in one row (right-padded input: the collator's), positions restarting per example.

    An example's first token predicts nothing in the padded batch (nothing comes before it); packed, the previous
    example's last position would predict it, so its label is set to -100."""
    real = batch["attention_mask"].bool()
    labels = batch["labels"].clone()
    labels[:, 0] = IGNORE_INDEX
    positions = real.long().cumsum(dim=1) - 1
    example = torch.arange(real.shape[0], device=real.device)[:, None].expand_as(real)
    return ModelBatch(
        # use_cache=False: transformers looks for packed sequences only without a cache (and training needs none)
        {"input_ids": batch["input_ids"][real][None], "position_ids": positions[real][None], "use_cache": False},
        labels[real][None],
        example[real][None],
    )


@dataclass(frozen=True)
class Packing:
    """Whether batches are packed, and why not when they are not (for the log and results.json)."""

    active: bool
    reason: str

    def __call__(self, batch: dict[str, torch.Tensor]) -> ModelBatch:
        return pack(batch) if self.active else padded(batch)

    def describe(self) -> str:
        return "packed (one row per batch, no padding)" if self.active else f"padded ({self.reason})"


def packing_for(model: nn.Module, mode: str) -> Packing:
    """`training.packing` ('auto' | 'off') applied to `model`: packed where that is exact (module docstring)."""
    if mode == "off":
        return Packing(False, "training.packing is off")
    inner = extract_model_from_parallel(model)
    arch = architecture_for(inner.config)
    if not arch.packing:
        return Packing(False, f"{arch.name} models do not build their attention mask from position_ids")
    implementation = getattr(inner.config, "_attn_implementation", None)
    if implementation not in PACKED_ATTENTION:
        return Packing(False, f"attention implementation {implementation!r} is not one of {', '.join(PACKED_ATTENTION)}")
    return Packing(True, "")
