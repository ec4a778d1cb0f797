"""`training.packing`: a batch's examples packed into rows without padding, with the same numbers.

The collator right-pads a batch to its longest example (data.py), and every linear layer computes the padding.
Packed, the batch's real tokens sit one example after the other in a row (one row for an E2E batch of 8 on GPT-2 M;
a row holds up to hidden-size tokens, see `pack`), with `position_ids` restarting at 0 at each example and no
`attention_mask`. Transformers (masking_utils.find_packed_sequence_indices, 5.x) reads the restarts as separate
sequences and builds a block-diagonal causal mask: each token attends to its own example's earlier tokens only, as
in the padded batch. Position embeddings (GPT-2's learned ones, rotary ones) see the same positions. So the logits at
every real position, the loss and the gradients are the padded batch's up to float rounding (different matrix
shapes sum in another order): tests/test_packing.py checks loss and every trained gradient within 1e-5 relative,
for every method and family, with dropout 0.

Dropout: packed and padded draw their random masks over different layouts (rows x packed width vs batch x length), so with
dropout on, a packed run sees other masks than a padded one: the same recipe in distribution, not the same numbers.

Where packing applies, in this one place:
- every method. The prefix methods' virtual tokens are ordinary positions at the start (and middle) of each example
  (data.py puts them there; methods/prefix.py replaces what sits at those positions), not past key values, so each
  packed example carries its own prefix, exactly as in its padded row.
- the families whose transformers code passes `position_ids` to `create_causal_mask` (`Architecture.packing`):
  GPT-2, LLaMA/Qwen/Mistral, GPT-NeoX, GPT-J, Phi-3, Gemma, Mixtral, Qwen2-MoE. OPT does not (transformers 5.24): packed, its examples would see
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


def pack(batch: dict[str, torch.Tensor], row_tokens: int | None = None) -> ModelBatch:
    """The batch's real tokens (right-padded input: the collator's) one example after the other, positions restarting
    at 0 per example, in rows of at most max(`row_tokens`, the longest example) tokens (None: one row), filled in order.

    A row's attention is dense over its width (its mask is width x width), so a row is capped: a batch of many
    examples fills several rows instead of one ever wider row. Rows shorter than the widest end in filler tokens,
    each with position 0 (a sequence of its own: no real token sees it), label -100 and example -1.
    An example's first token predicts nothing in the padded batch (nothing comes before it); packed, the previous
    example's last position would predict it, so its label is set to -100."""
    real = batch["attention_mask"].bool()
    width_in = real.shape[1]
    # the collator's host-side lengths; from the mask (a device sync on a GPU) for a batch made elsewhere
    lengths = batch["lengths"] if "lengths" in batch else real.sum(dim=1).tolist()
    cap = sum(lengths) if row_tokens is None else max(max(lengths), row_tokens)
    rows: list[list[int]] = []  # example indices per row
    filled: list[int] = []
    for index, length in enumerate(lengths):
        if rows and filled[-1] + length <= cap:
            rows[-1].append(index)
            filled[-1] += length
        else:
            rows.append([index])
            filled.append(length)
    width = max(filled)
    # source[r, c]: the flat (example x padded width) index of the token packed at row r, column c; -1 for filler
    source = torch.full((len(rows), width), -1, dtype=torch.long)
    for r, examples in enumerate(rows):
        column = 0
        for index in examples:
            source[r, column : column + lengths[index]] = torch.arange(lengths[index]) + index * width_in
            column += lengths[index]
    source = source.to(real.device)
    filler = source < 0
    take = source.clamp(min=0)
    labels = batch["labels"].clone()
    labels[:, 0] = IGNORE_INDEX
    positions = (real.long().cumsum(dim=1) - 1).flatten()[take].masked_fill(filler, 0)
    example = (take // width_in).masked_fill(filler, -1)
    return ModelBatch(
        # use_cache=False: transformers looks for packed sequences only without a cache (and training needs none)
        {"input_ids": batch["input_ids"].flatten()[take], "position_ids": positions, "use_cache": False},
        labels.flatten()[take].masked_fill(filler, IGNORE_INDEX),
        example,
    )


@dataclass(frozen=True)
class Packing:
    """Whether batches are packed, and why not when they are not (for the log and results.json)."""

    active: bool
    reason: str
    row_tokens: int | None = None

    def __call__(self, batch: dict[str, torch.Tensor]) -> ModelBatch:
        return pack(batch, self.row_tokens) if self.active else padded(batch)

    def describe(self) -> str:
        if self.active:
            return f"packed (rows of up to {self.row_tokens} tokens or the longest example, no padding)"
        return f"padded ({self.reason})"


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
    # Rows of up to hidden-size tokens: a row's attention then costs at most ~1/6 of its linear layers' FLOPs
    # (4 x width x h against 24 x h^2 per token), so packing many examples never makes attention the bottleneck.
    return Packing(True, "", row_tokens=arch.hidden_size(inner.config))
