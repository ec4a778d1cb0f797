"""Bottleneck adapters start at the base model and sit where Houlsby (H) and Lin (L) put them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lora_ft.methods.adapters import AdaptedOutput


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("method_name", ["adapter_h", "adapter_l"])
def test_zero_up_projection_leaves_the_output_unchanged(tiny, family, method_name):
    base = tiny.model(family)
    model, _, _ = tiny.adapt(family, method_name)
    ids = tiny.ids()
    torch.testing.assert_close(logits(model, ids), logits(base, ids), rtol=0, atol=0)
    tiny.perturb(model)  # and the test can fail: a nonzero up-projection changes the output
    assert not torch.allclose(logits(model, ids), logits(base, ids), atol=1e-4)


@pytest.mark.parametrize("method_name, sites", [("adapter_h", ("attention_output", "mlp_output")), ("adapter_l", ("mlp_output",))])
def test_adapter_sites_and_computation(tiny, family, method_name, sites):
    model, _, arch = tiny.adapt(family, method_name)
    tiny.perturb(model)
    for block in arch.block_list(model):
        wrapped = {path for path, m in block.named_modules() if isinstance(m, AdaptedOutput)}
        assert wrapped == {getattr(arch, site) for site in sites}
    # h + up(act(down(LN(h)))) on the sublayer's output, computed by hand
    wrapper = arch.block_list(model)[0].get_submodule(arch.mlp_output)
    adapter = wrapper.adapter
    if family in tiny.moe:  # the adapter sits on the whole MoE block, whose input is the hidden state
        width = tiny.hidden
    else:
        weight = wrapper.base_layer.weight
        width = weight.shape[0] if family == "gpt2" else weight.shape[1]  # GPT-2's Conv1D stores (in, out)
    x = torch.randn(1, 3, width)  # (batch, positions, width): a MoE block routes 3-D hidden states
    h = wrapper.base_layer(x)
    if method_name == "adapter_l":  # Lin et al.: a LayerNorm in front of the bottleneck
        h_in = F.layer_norm(h, h.shape[-1:], adapter.layer_norm.weight, adapter.layer_norm.bias)
    else:
        h_in = h
    expected = h + F.linear(F.gelu(F.linear(h_in, adapter.down.weight, adapter.down.bias)), adapter.up.weight, adapter.up.bias)
    torch.testing.assert_close(wrapper(x), expected)
