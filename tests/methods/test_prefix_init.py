"""Prefix initialisation (Li & Liang): the virtual tokens start as real vocabulary tokens, so an untrained prefix run
computes what the frozen model computes with those real tokens in place. Checked against the plain model itself."""

from __future__ import annotations

import pytest
import torch

from lora_ft.methods.prefix import fit_ids

INIT = [5, 6, 7, 8, 9]


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_prelayer_prefix_is_exactly_its_real_tokens(tiny, family):
    """Causal attention: the first l_p positions see nothing after them, so copying the activations the frozen model
    computes for real tokens there makes the virtual prefix indistinguishable from those tokens, at every layer."""
    model, method, _ = tiny.adapt(family, "prelayer", prefix_length=3, infix_length=0)
    method.initialise(INIT[:3])
    ids = tiny.ids(batch=2, length=6)
    virtual = torch.arange(tiny.vocab, tiny.vocab + 3).expand(2, -1)
    real = torch.tensor(INIT[:3]).expand(2, -1)
    plain = tiny.model(family)  # the same seed: the same frozen weights, no method
    torch.testing.assert_close(logits(model, torch.cat([virtual, ids], 1)), logits(plain, torch.cat([real, ids], 1)),
                               rtol=1e-5, atol=1e-5)


def test_preembed_prefix_and_infix_are_exactly_their_real_tokens(tiny, family):
    model, method, _ = tiny.adapt(family, "preembed", prefix_length=3, infix_length=2)
    method.initialise(INIT)
    ids = tiny.ids(batch=2, length=6)
    virtual = torch.arange(tiny.vocab, tiny.vocab + 5).expand(2, -1)
    real = torch.tensor(INIT).expand(2, -1)
    with_virtual = torch.cat([virtual[:, :3], ids[:, :4], virtual[:, 3:], ids[:, 4:]], 1)
    with_real = torch.cat([real[:, :3], ids[:, :4], real[:, 3:], ids[:, 4:]], 1)
    torch.testing.assert_close(logits(model, with_virtual), logits(tiny.model(family), with_real), rtol=1e-5, atol=1e-5)


def test_prelayer_infix_follows_the_prefix_words(tiny):
    """An infix slot starts as the activations of its word read after the prefix words (not after each example's
    context, which differs per example): block 0's input is exactly the word's embedding (+ position for GPT-2)."""
    model, method, arch = tiny.adapt("llama", "prelayer", prefix_length=2, infix_length=2)
    method.initialise(INIT[:4])
    embedding = model.get_input_embeddings().base.weight
    first = arch.block_list(model)[0].prefix_activations
    torch.testing.assert_close(first, embedding[INIT[:4]], rtol=0, atol=0)  # LLaMA: no position embedding at the input


def test_init_ids_are_cut_or_repeated_to_fit():
    assert fit_ids([1, 2, 3], 2) == [1, 2]
    assert fit_ids([1, 2], 5) == [1, 2, 1, 2, 1]
    with pytest.raises(ValueError, match="gives no tokens"):
        fit_ids([], 3)


def test_init_ids_outside_the_vocabulary_are_refused(tiny):
    _, method, _ = tiny.adapt("gpt2", "preembed", prefix_length=1, infix_length=0)
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        method.initialise([tiny.vocab + 3])
