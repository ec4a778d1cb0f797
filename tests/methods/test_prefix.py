"""Prefix methods: virtual token ids past the vocabulary, PreLayer's replaced activations, decoding with a KV cache."""

from __future__ import annotations

import pytest
import torch

from lora_ft.generate import _cache_keyword, _returned_cache

PREFIX, INFIX = 3, 2  # tiny.method_kwargs for both prefix methods


def prompt_with_virtual_tokens(tiny, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """([prefix virtual] context [infix virtual], continuation): the layout lora_ft/data.py produces."""
    ids = tiny.ids(batch=batch, length=6)
    virtual = torch.arange(tiny.vocab, tiny.vocab + PREFIX + INFIX).expand(batch, -1)
    prompt = torch.cat([virtual[:, :PREFIX], ids[:, :4], virtual[:, PREFIX:]], dim=1)
    return prompt, ids[:, 4:]


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("method_name", ["prelayer", "preembed"])
def test_virtual_token_ids_are_accepted(tiny, family, method_name):
    model, method, _ = tiny.adapt(family, method_name)
    assert method.virtual_token_counts() == (PREFIX, INFIX)
    prompt, _ = prompt_with_virtual_tokens(tiny)
    out = logits(model, prompt)
    assert out.shape == (*prompt.shape, tiny.vocab) and torch.isfinite(out).all()
    with pytest.raises(IndexError):  # the plain model has no rows for them: the method is what makes them valid
        logits(tiny.model(family), prompt)


def test_prelayer_replaces_block_inputs_at_virtual_positions(tiny, family):
    model, _, arch = tiny.adapt(family, "prelayer")
    prompt, _ = prompt_with_virtual_tokens(tiny)
    reference = logits(model, prompt)
    # The virtual ids embed as row 0 of the frozen embedding before block 0 replaces them: that row must not matter
    # (the prompt's real tokens are >= 3, so no real token uses row 0).
    embedding = model.get_input_embeddings().base
    with torch.no_grad():
        embedding.weight[0].normal_(std=5.0)
    # Column 0 is left out: GPT-2 and OPT tie the LM head to the embedding, so row 0 is also token 0's output vector.
    torch.testing.assert_close(logits(model, prompt)[..., 1:], reference[..., 1:], rtol=0, atol=0)
    # Every block's trained activations do matter (the last block's reach the output through attention).
    for i, block in enumerate(arch.block_list(model)):
        saved = block.prefix_activations.detach().clone()
        with torch.no_grad():
            block.prefix_activations.normal_(std=1.0)
        assert not torch.allclose(logits(model, prompt), reference, atol=1e-4), f"block {i}'s prefix activations are unused"
        with torch.no_grad():
            block.prefix_activations.copy_(saved)


def test_preembed_trains_the_virtual_embeddings(tiny, family):
    model, _, _ = tiny.adapt(family, "preembed")
    prompt, _ = prompt_with_virtual_tokens(tiny)
    reference = logits(model, prompt)
    embedding = model.get_input_embeddings()
    with torch.no_grad():
        embedding.virtual[PREFIX].normal_(std=1.0)  # the first infix token's vector (not a constant shift: LayerNorm removes those)
    changed = logits(model, prompt)
    first_infix = PREFIX + 4
    # causal: earlier positions keep (a MoE's experts batch every token routed to them: the float sums of earlier
    # positions may change in the last bits when a later token changes)
    atol = 1e-6 if family in tiny.moe else 0
    torch.testing.assert_close(changed[:, :first_infix], reference[:, :first_infix], rtol=0, atol=atol)
    assert not torch.allclose(changed[:, first_infix:], reference[:, first_infix:], atol=1e-4)


@pytest.mark.parametrize("method_name", ["prelayer", "preembed"])
def test_kv_cache_decoding_matches_a_full_forward(tiny, family, method_name):
    model, _, _ = tiny.adapt(family, method_name)
    tiny.perturb(model)
    prompt, continuation = prompt_with_virtual_tokens(tiny)
    full = logits(model, torch.cat([prompt, continuation], dim=1))
    with torch.no_grad():
        keyword = _cache_keyword(model)  # as the decoder does: `cache` from transformers 5.24, else past_key_values
        out = model(prompt, use_cache=True)
        steps = [out.logits[:, -1]]
        cache = _returned_cache(out)
        for t in range(continuation.shape[1]):
            out = model(continuation[:, t : t + 1], **{keyword: cache}, use_cache=True)
            cache = _returned_cache(out)
            steps.append(out.logits[:, -1])
    n = prompt.shape[1]
    torch.testing.assert_close(torch.stack(steps, dim=1), full[:, n - 1 :], rtol=1e-4, atol=1e-5)


def test_generate_with_virtual_tokens_in_the_prompt(tiny):
    model, _, _ = tiny.adapt("gpt2", "prelayer")
    tiny.perturb(model)
    prompt, _ = prompt_with_virtual_tokens(tiny)
    with torch.no_grad():
        generated = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=3, do_sample=False)
    assert generated.shape == (2, prompt.shape[1] + 3)
    # greedy decoding with the cache picks what a no-cache forward ranks first
    first = logits(model, prompt)[:, -1].argmax(-1)
    assert torch.equal(generated[:, prompt.shape[1]], first)
