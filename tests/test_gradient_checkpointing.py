"""training.gradient_checkpointing (build.enable_gradient_checkpointing): the blocks recompute their activations in
backward, and loss and gradients equal those without it, for every method (dropout included: the RNG is replayed),
with frozen embeddings and without transformers' enable_input_require_grads hook."""

from __future__ import annotations

import pytest
import torch

from lora_ft.build import enable_gradient_checkpointing
from lora_ft.loss import completion_loss, completion_positions
from lora_ft.packing import pack, padded
from test_packing import examples


def step(model, layout) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    torch.manual_seed(7)  # the same dropout draws for both runs
    with completion_positions(model, layout.labels) as (targets, _rows):
        logits = model(**layout.inputs).logits
    loss_sum, tokens = completion_loss(logits, targets, 0.1)
    (loss_sum / tokens).backward()
    return loss_sum.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]


def count_calls(model, arch) -> dict[str, int]:
    calls = {"n": 0}

    def hook(*_):
        calls["n"] += 1

    for block in arch.block_list(model):
        block.get_submodule(arch.attention_output).register_forward_hook(hook)
    return calls


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_checkpointed_loss_and_gradients_equal_the_plain_ones(tiny, family, method_name):
    kwargs = {**tiny.method_kwargs[method_name], **({"dropout": 0.1} if method_name == "lora" else {})}
    try:
        model, method, arch = tiny.adapt(family, method_name, **kwargs)
    except ValueError as error:  # BitFit on a family without biases
        pytest.skip(str(error))
    tiny.perturb(model)
    model.train()
    batch = padded(examples(tiny, method))
    calls = count_calls(model, arch)
    want_loss, want = step(model, batch)
    assert calls["n"] == arch.num_layers(model.config)  # one forward per block
    enable_gradient_checkpointing(model)
    assert not getattr(model, "_require_grads_hooks", None)  # non-reentrant: no input needs grad
    calls["n"] = 0
    got_loss, got = step(model, batch)
    # forward, then the recompute in backward (of the blocks that backward reaches: FT^Top1 skips the frozen first)
    assert arch.num_layers(model.config) < calls["n"] <= 2 * arch.num_layers(model.config)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=0)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)


def test_checkpointing_and_packing_together(tiny):
    model, method, _ = tiny.adapt("gpt2", "lora")
    tiny.perturb(model)
    model.train()
    batch = examples(tiny, method)
    want_loss, want = step(model, padded(batch))
    enable_gradient_checkpointing(model)
    got_loss, got = step(model, pack(batch))
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=0)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)
