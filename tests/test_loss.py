"""The loss on gathered completion positions equals the full-logits loss, value and gradients, for every method and
family (tiny models; right-padded batches with virtual tokens where the method has them)."""

from __future__ import annotations

import pytest
import torch

from tiny_families import FAMILIES
from lora_ft.loss import completion_loss, completion_loss_per_example, completion_positions, full_logits_loss


def batch(tiny, method) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two examples of different lengths, right-padded: [prefix virtual] context [infix virtual] completion [pad]."""
    prefix, infix = method.virtual_token_counts()
    virtual = list(range(tiny.vocab, tiny.vocab + prefix + infix))
    ids = tiny.ids(batch=2, length=9, seed=3).tolist()
    examples = [(ids[0][:4], ids[0][4:9]), (ids[1][:2], ids[1][2:5])]  # (context, completion)
    rows = []
    for context, completion in examples:
        prompt = virtual[:prefix] + context + virtual[prefix:]
        rows.append((prompt + completion, [-100] * len(prompt) + completion))
    width = max(len(r[0]) for r in rows)
    input_ids = torch.tensor([r[0] + [0] * (width - len(r[0])) for r in rows])
    mask = torch.tensor([[1] * len(r[0]) + [0] * (width - len(r[0])) for r in rows])
    labels = torch.tensor([r[1] + [-100] * (width - len(r[1])) for r in rows])
    return input_ids, mask, labels


def grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("family", FAMILIES)
def test_gathered_loss_and_gradients_equal_the_full_logits_reference(tiny, family, method_name):
    model, method = tiny.adapt_for_training(family, method_name)
    input_ids, mask, labels = batch(tiny, method)
    for smoothing in (0.0, 0.1):
        model.zero_grad()
        reference, ref_tokens = full_logits_loss(model(input_ids=input_ids, attention_mask=mask).logits, labels, smoothing)
        reference.backward()
        expected = grads(model)
        model.zero_grad()
        with completion_positions(model, labels) as (targets, _rows):
            logits = model(input_ids=input_ids, attention_mask=mask).logits
        loss, tokens = completion_loss(logits, targets, smoothing)
        loss.backward()
        assert logits.shape == (int(ref_tokens), model.config.vocab_size)  # only completion positions
        assert int(tokens) == int(ref_tokens) == 8  # 5 + 3 completion tokens
        torch.testing.assert_close(loss, reference, rtol=1e-5, atol=0)
        full = model(input_ids=input_ids, attention_mask=mask).logits  # the old call shape still works
        assert completion_loss(full, labels, smoothing)[0].item() == pytest.approx(reference.item(), rel=1e-6)
        for got, want in zip(grads(model), expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    # the hook is gone after the block: the model returns full logits again
    assert model(input_ids=input_ids, attention_mask=mask).logits.shape[:2] == input_ids.shape


def test_per_example_validation_sums(tiny):
    model, method, _ = tiny.adapt("gpt2", "lora")
    tiny.perturb(model)
    input_ids, mask, labels = batch(tiny, method)
    with torch.no_grad():
        full = model(input_ids=input_ids, attention_mask=mask).logits
        token_losses = torch.nn.functional.cross_entropy(
            full[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none"
        )
        with completion_positions(model, labels) as (targets, rows):
            logits = model(input_ids=input_ids, attention_mask=mask).logits
        sums, counts = completion_loss_per_example(logits, targets, rows, 2)
    torch.testing.assert_close(sums, token_losses.sum(dim=1), rtol=1e-5, atol=0)
    assert counts.tolist() == [5, 3]
