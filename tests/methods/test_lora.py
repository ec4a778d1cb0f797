"""LoRA: starts at the base model, merges exactly, touches only its slice of a fused projection, and agrees with peft."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from lora_ft.methods.lora import LoraLayer, lora_layers

ALL_WEIGHTS = {"attn", "mlp"}  # every logical weight the family has


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_zero_b_leaves_the_output_unchanged(tiny, family):
    base = tiny.model(family)
    model, _, _ = tiny.adapt(family, "lora", rank=2, alpha=8.0, dropout=0.0, targets=sorted(ALL_WEIGHTS))
    assert lora_layers(model), "no LoRA layer was added"
    ids = tiny.ids()
    torch.testing.assert_close(logits(model, ids), logits(base, ids), rtol=0, atol=0)
    tiny.perturb(model)  # and the test can fail: a nonzero B changes the output
    assert not torch.allclose(logits(model, ids), logits(base, ids), atol=1e-4)


def test_dropout_acts_on_the_low_rank_branch_only(tiny):
    base = tiny.model("gpt2")
    model, _, _ = tiny.adapt("gpt2", "lora", rank=2, alpha=8.0, dropout=0.5, targets=["q", "v"])
    model.train()  # dropout active; with B = 0 the branch contributes nothing, so the output is still the base model's
    ids = tiny.ids()
    torch.testing.assert_close(logits(model, ids), logits(base, ids), rtol=0, atol=0)


def test_merge_agrees_with_unmerged_and_unmerge_restores(tiny, family):
    model, method, _ = tiny.adapt(family, "lora", rank=2, alpha=8.0, dropout=0.0, targets=sorted(ALL_WEIGHTS))
    tiny.perturb(model)
    ids = tiny.ids()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    unmerged = logits(model, ids)
    method.merge(model)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed and all(n.endswith("base_layer.weight") for n in changed), changed
    torch.testing.assert_close(logits(model, ids), unmerged, rtol=1e-5, atol=1e-5)
    method.unmerge(model)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p, before[n], rtol=0, atol=1e-6)
    torch.testing.assert_close(logits(model, ids), unmerged, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------ fused projections

_CAPTURED: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []


def _capturing_attention(module, query, key, value, *args, **kwargs):
    """Records q, k, v exactly as the model's own attention code split them, then attends as usual."""
    _CAPTURED.append((query.detach().clone(), key.detach().clone(), value.detach().clone()))
    return sdpa_attention_forward(module, query, key, value, *args, **kwargs)


AttentionInterface.register("lora_ft_test_capture", _capturing_attention)


def first_block_qkv(model, ids) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v of block 0 (whose input no adaptation changes) as the model computes them."""
    model.set_attn_implementation("lora_ft_test_capture")
    _CAPTURED.clear()
    with torch.no_grad():
        model(ids)
    return _CAPTURED[0]


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "phi3"])  # phi3: k and v narrower than q (GQA)
@pytest.mark.parametrize("targets", [["q"], ["v"], ["q", "v"]])
def test_fused_slice_changes_only_its_own_part(tiny, family, targets):
    base = tiny.model(family)
    model, _, arch = tiny.adapt(family, "lora", rank=2, alpha=8.0, dropout=0.0, targets=targets)
    (layer,) = [m for m in arch.block_list(model)[0].modules() if isinstance(m, LoraLayer)]
    assert arch.weights["q"].fused is not None, "the test is about a fused q|k|v projection"
    with torch.no_grad():
        layer.lora_B.normal_(std=0.5)
    ids = tiny.ids()
    base_qkv = first_block_qkv(base, ids)
    adapted_qkv = first_block_qkv(model, ids)
    for name, before, after in zip("qkv", base_qkv, adapted_qkv):
        if name in targets:
            assert (after - before).abs().max() > 1e-3, f"LoRA on {name} did not change {name}"
        else:
            torch.testing.assert_close(after, before, rtol=0, atol=0, msg=f"LoRA on {targets} changed {name}")


def test_layers_and_rank_per_target(tiny):
    model, _, arch = tiny.adapt(
        "llama", "lora", rank=2, alpha=8.0, dropout=0.0, targets=["q", "o"], rank_per_target={"o": 5}, layers=[1]
    )
    layers = lora_layers(model)
    assert sorted(layers) == ["model.layers.1.self_attn.o_proj", "model.layers.1.self_attn.q_proj"]
    assert layers["model.layers.1.self_attn.o_proj"].lora_A.shape == (5, tiny.hidden)
    assert layers["model.layers.1.self_attn.q_proj"].lora_A.shape == (2, tiny.hidden)
    assert layers["model.layers.1.self_attn.o_proj"].scaling == pytest.approx(8.0 / 5)


def test_fused_weights_must_share_a_rank(tiny):
    with pytest.raises(ValueError, match="share one rank"):
        tiny.adapt("gpt2", "lora", rank=2, targets=["q", "v"], rank_per_target={"v": 4})


# ----------------------------------------------------------------------------------------------------------- init


def test_gaussian_init_has_std_002():
    layer = LoraLayer(nn.Linear(256, 256), ["w"], None, 256, rank=16, alpha=16, dropout=0.0, init_a="gaussian")
    assert layer.lora_A.std().item() == pytest.approx(0.02, rel=0.05)  # 4,096 draws: the estimate is within ~2%
    assert layer.lora_A.mean().abs().item() < 0.002
    assert torch.count_nonzero(layer.lora_B) == 0


def test_kaiming_init_is_bounded_by_one_over_sqrt_fan_in():
    layer = LoraLayer(nn.Linear(256, 96), ["a", "b"], torch.arange(96)[:64], 32, rank=8, alpha=8, dropout=0.0, init_a="kaiming")
    bound = 1 / math.sqrt(256)  # kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert layer.lora_A.abs().max().item() <= bound
    assert layer.lora_A.abs().max().item() > 0.9 * bound


# ---------------------------------------------------------------------------------------------- against peft's LoRA


def _peft_llama(tiny, rank: int, alpha: float):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    return get_peft_model(tiny.model("llama"), config).eval()


def test_trainable_count_and_shapes_match_peft_on_llama(tiny):
    ours, _, _ = tiny.adapt("llama", "lora", rank=4, alpha=32.0, dropout=0.0, targets=["q", "v"])
    peft_model = _peft_llama(tiny, 4, 32)
    trainable_peft, _ = peft_model.get_nb_trainable_parameters()
    trainable_ours = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    assert trainable_ours == trainable_peft
    for name, layer in lora_layers(ours).items():
        target = peft_model.base_model.model.get_submodule(name)
        assert layer.lora_A.shape == target.lora_A["default"].weight.shape
        assert layer.lora_B[0].shape == target.lora_B["default"].weight.shape
        assert layer.scaling == pytest.approx(target.scaling["default"])


def test_forward_equals_peft_forward_on_llama(tiny):
    ours, _, _ = tiny.adapt("llama", "lora", rank=4, alpha=32.0, dropout=0.0, targets=["q", "v"])
    tiny.perturb(ours, std=0.1)
    peft_model = _peft_llama(tiny, 4, 32)
    with torch.no_grad():
        for name, layer in lora_layers(ours).items():
            target = peft_model.base_model.model.get_submodule(name)
            target.lora_A["default"].weight.copy_(layer.lora_A)
            target.lora_B["default"].weight.copy_(layer.lora_B[0])
    ids = tiny.ids()
    expected = logits(peft_model, ids)
    assert not torch.allclose(expected, logits(tiny.model("llama"), ids), atol=1e-4), "the update is too small to test"
    torch.testing.assert_close(logits(ours, ids), expected, rtol=1e-5, atol=1e-5)
