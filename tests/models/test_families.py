"""Each family's architecture facts (lora_ft/models/<family>.py) against the model transformers builds: every weight's
module exists and its slice has the width the attention code reads; the blocks, embedding, final norm, LM head and
sublayer outputs are where the facts say. The families added for users' models (Phi-3, Gemma 2/3, Mixtral, Qwen2-MoE)
then run the whole tiny-model matrix (tests/conftest.py FAMILIES)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tiny_families import FAMILIES
from lora_ft.models import architecture_for


def gemma3_text():
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=8, vocab_size=128, max_position_embeddings=64)


@pytest.mark.parametrize("family", [*FAMILIES, "gemma3_text"])
def test_the_facts_point_at_the_built_model(tiny, family):
    from transformers import AutoModelForCausalLM

    config = gemma3_text() if family == "gemma3_text" else tiny.config(family)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    arch = architecture_for(model)
    assert arch.name == (family if family != "gemma3_text" else "gemma")
    blocks = arch.block_list(model)
    assert isinstance(blocks, nn.ModuleList) and len(blocks) == arch.num_layers(config) == 2
    assert model.get_submodule(arch.input_embedding) is model.get_input_embeddings()
    assert model.get_submodule(arch.lm_head) is model.get_output_embeddings()
    assert isinstance(model.get_submodule(arch.final_norm), nn.Module)
    block = blocks[0]
    for site in (arch.attention_output, arch.mlp_output):
        block.get_submodule(site)
    heads, kv_heads = arch.num_heads(config), arch.num_kv_heads(config)
    head_dim = getattr(config, "head_dim", None) or arch.hidden_size(config) // heads
    for name, location in arch.weights.items():
        module = block.get_submodule(location.module)
        out_features = module.weight.shape[1] if type(module).__name__ == "Conv1D" else module.weight.shape[0]
        index = location.output_index(out_features, heads, kv_heads)
        width = out_features if index is None else len(index)
        if name == "q":
            assert width == heads * head_dim, name
        elif name in ("k", "v"):
            assert width == kv_heads * head_dim, name
        assert index is None or len(set(index.tolist())) == width <= out_features


def test_phi3_slices_are_where_its_attention_reads_them(tiny):
    """Phi-3's qkv_proj under grouped-query attention: q is 4 heads wide, k and v 2 heads each, one after the other."""
    arch = architecture_for(tiny.config("phi3"))
    q, k, v = (arch.weights[n].output_index(64, 4, 2).tolist() for n in "qkv")
    assert (q, k, v) == (list(range(0, 32)), list(range(32, 48)), list(range(48, 64)))
    gate, up = (arch.weights[n].output_index(128, 4, 2).tolist() for n in ("mlp_gate", "mlp_up"))
    assert (gate, up) == (list(range(0, 64)), list(range(64, 128)))  # Phi3MLP: gate, up = chunk(2)


def test_moe_families_adapt_attention_and_the_whole_moe_block(tiny):
    for family in tiny.moe:
        arch = architecture_for(tiny.config(family))
        assert set(arch.weights) == {"q", "k", "v", "o"} and arch.mlp_output == "mlp"
