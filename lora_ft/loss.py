"""The training loss on completion tokens, with the LM head run on completion positions only.

Only the positions whose next token is a labelled completion token carry loss (E2E batches of 8: about 37% of the
positions; the rest are context and padding). The vocabulary projection is a large share of a forward (GPT-2 M:
~14% of the FLOPs, SmolLM2-135M: ~19%) and its output, batch x length x vocabulary, is the largest activation;
computing it and the cross-entropy everywhere changes no number. So, for the duration of one forward,
:func:`completion_positions` puts a forward pre-hook on the model's LM head (found by the family's architecture
facts, ``Architecture.lm_head``) that hands it the hidden states of the completion positions only, gathered into
one (tokens, hidden) matrix. The model's forward is called as usual (through DDP or any wrapper, with every
method's hooks and virtual tokens in place); its ``logits`` are then (tokens, vocabulary). A hook, not a
replacement module, so that parameter names, tied weights and checkpoints are untouched.

Same loss and gradients as the full-logits reference (``tests/test_loss.py``: every method, 1e-5 relative).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from accelerate.utils import extract_model_from_parallel
from torch import nn

from .models import architecture_for

__all__ = ["completion_positions", "completion_loss", "completion_loss_per_example", "full_logits_loss", "validation_loss"]

IGNORE = -100


def _lm_head(model: nn.Module) -> nn.Module:
    inner = extract_model_from_parallel(model)
    return inner.get_submodule(architecture_for(inner.config).lm_head)


@contextmanager
def completion_positions(
    model: nn.Module, labels: torch.Tensor, example: torch.Tensor | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """While open, the model's forward returns logits for the completion positions only, as (tokens, vocabulary).

    Yields ``(targets, rows)``: the next-token ids those logits predict, in row-major order of the positions, and
    the example of each: its batch row, or, given ``example`` (the example of every position, as labels' shape: a
    packed batch, lora_ft/packing.py), that. ``labels`` are the batch's labels (-100 where there is no loss),
    aligned with the inputs.
    """
    keep = labels[:, 1:] != IGNORE  # position t predicts labels[t + 1]; the last position predicts nothing
    targets = labels[:, 1:][keep]
    rows = keep.nonzero(as_tuple=True)[0] if example is None else example[:, 1:][keep]

    def gather(_module: nn.Module, args: tuple) -> tuple:
        hidden = args[0]
        return (hidden[:, :-1][keep], *args[1:])

    handle = _lm_head(model).register_forward_pre_hook(gather)
    try:
        yield targets, rows
    finally:
        handle.remove()


def completion_loss(
    logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of token losses, number of completion tokens).

    From gathered logits (tokens, vocabulary) and their ``targets`` (tokens,), as :func:`completion_positions`
    yields them; or, as before this module existed, from full logits (batch, length, vocabulary) and the batch's
    ``labels`` (batch, length), which is :func:`full_logits_loss`.
    """
    if logits.dim() == 3:
        return full_logits_loss(logits, targets, label_smoothing)
    loss_sum = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing, reduction="sum")
    return loss_sum, torch.tensor(targets.numel(), device=targets.device)


def completion_loss_per_example(
    logits: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss sum, completion tokens) of each example of the batch, without label smoothing (validation)."""
    token_losses = F.cross_entropy(logits.float(), targets, reduction="none")
    sums = torch.zeros(batch_size, device=logits.device, dtype=token_losses.dtype).index_add_(0, rows, token_losses)
    counts = torch.bincount(rows, minlength=batch_size)
    return sums, counts


def full_logits_loss(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: the loss from the logits of every position (what the training step computed before)."""
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    shift_labels = labels[:, 1:].reshape(-1)
    loss_sum = F.cross_entropy(
        shift_logits, shift_labels, ignore_index=IGNORE, label_smoothing=label_smoothing, reduction="sum"
    )
    return loss_sum, (shift_labels != IGNORE).sum()


def loss_names(label_smoothing: float) -> tuple[str, str]:
    """How logs name the two losses: the training loss is the objective, label smoothing included; the validation
    loss is plain cross-entropy. With smoothing they differ even on the same data (SmolLM2 on SAMSum: 5.03 vs 2.52)."""
    if not label_smoothing:
        return "train loss", "validation loss"
    return f"train loss (label smoothing {label_smoothing:g})", "validation loss (no label smoothing)"


def loss_descriptions(label_smoothing: float) -> dict[str, str]:
    """What results.json's train_loss and validation_loss are (its extra["losses"])."""
    smoothing = f"with label smoothing {label_smoothing:g}" if label_smoothing else "no label smoothing"
    return {
        "train_loss": f"token-mean cross-entropy of the training batches, {smoothing} (the training objective)",
        "validation_loss": "token-mean cross-entropy of the validation split, no label smoothing",
    }


@torch.no_grad()
def validation_loss(model: nn.Module, loader, packing, accelerator) -> float:
    """Token-mean cross-entropy on the validation split, without label smoothing (a plain NLL).

    Per-example sums go through `gather_for_metrics`, which drops the samples Accelerate repeats to even out the
    last batch over processes: the value does not depend on the number of processes."""
    model.eval()
    loss_total, token_total = 0.0, 0
    for batch in loader:
        layout = packing(batch)
        with completion_positions(model, layout.labels, layout.example) as (targets, rows):
            logits = model(**layout.inputs).logits
        example_losses, example_tokens = accelerator.gather_for_metrics(
            completion_loss_per_example(logits, targets, rows, batch["labels"].shape[0])
        )
        loss_total += float(example_losses.sum())
        token_total += int(example_tokens.sum())
    model.train()
    return loss_total / max(token_total, 1)
