"""Every method trains exactly its own parameters, on every family, and they are as many as the paper's closed forms say."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lora_ft.methods import count_parameters


def with_virtual_tokens(ids: torch.Tensor, vocab: int, prefix: int, infix: int) -> torch.Tensor:
    """[prefix virtual ids] context [infix virtual ids] target, as lora_ft/data.py lays them out."""
    batch, length = ids.shape
    virtual = torch.arange(vocab, vocab + prefix + infix).expand(batch, -1)
    half = length // 2
    return torch.cat([virtual[:, :prefix], ids[:, :half], virtual[:, prefix:], ids[:, half:]], dim=1)


def method_input(tiny, method_name: str) -> torch.Tensor:
    ids = tiny.ids()
    if method_name in ("prelayer", "preembed"):
        kw = tiny.method_kwargs[method_name]
        ids = with_virtual_tokens(ids, tiny.vocab, kw["prefix_length"], kw["infix_length"])
    return ids


def expected_trainable(name: str, method_name: str, arch, num_layers: int) -> bool:
    """Which parameters a method should train, decided from the parameter's name alone (not from the method's code)."""
    if method_name == "lora":
        return name.endswith((".lora_A", ".lora_B"))
    if method_name in ("adapter_h", "adapter_l"):
        return ".adapter." in name
    if method_name == "prelayer":
        return name.endswith(".prefix_activations")
    if method_name == "preembed":
        return name == f"{arch.input_embedding}.virtual"
    if method_name == "bitfit":
        return name.endswith(".bias")
    if method_name == "ft":
        return True
    if method_name == "ft_top":  # top_k = 1: the last block and the final norm
        return name.startswith((f"{arch.blocks}.{num_layers - 1}.", f"{arch.final_norm}."))
    raise AssertionError(method_name)


def test_only_intended_parameters_get_gradients(tiny, family, method_name):
    if family in tiny.bias_free and method_name == "bitfit":
        with pytest.raises(ValueError, match="bias"):  # LLaMA, Phi-3, Gemma, Mixtral have no bias vectors at all
            tiny.adapt(family, method_name)
        return
    model, method, arch = tiny.adapt(family, method_name)
    tiny.perturb(model)  # zero-initialised LoRA B / adapter up would leave A / down without gradient
    ids = method_input(tiny, method_name)
    logits = model(ids).logits
    targets = torch.randint(0, tiny.vocab, logits.shape[:2], generator=torch.Generator().manual_seed(3))
    F.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {n for n, p in model.named_parameters() if expected_trainable(n, method_name, arch, tiny.layers)}
    assert trainable == expected
    assert trainable, "the method trains nothing"
    for name, p in model.named_parameters():
        if name in trainable:
            assert p.grad is not None, f"{name} is trainable but got no gradient"
        else:
            assert p.grad is None, f"{name} is frozen but got a gradient"
    zero = [n for n, p in model.named_parameters() if n in trainable and not bool(p.grad.abs().sum() > 0)]
    # Softmax is shift-invariant, so a separate key bias (OPT's k_proj) gets an exactly-zero gradient; nothing else may.
    assert all(n.endswith("k_proj.bias") for n in zero), zero


def closed_form_trainable(tiny, family: str, method_name: str, model, arch) -> int:
    """The paper's parameter formulas (paper.md), written out for the tiny shapes."""
    cfg = tiny.config(family)
    L, d, V = tiny.layers, tiny.hidden, tiny.vocab
    kw = tiny.method_kwargs[method_name]
    if method_name == "lora":  # r x in for A plus out x r for B, for W_q and W_v in every block
        r = kw["rank"]
        v_out = d if family not in tiny.separate_kv else cfg.num_key_value_heads * (d // tiny.heads)
        return L * (r * (d + d) + r * (d + v_out))
    if method_name == "adapter_h":
        r = kw["bottleneck"]
        return 2 * L * (2 * d * r + r + d)
    if method_name == "adapter_l":
        r = kw["bottleneck"]
        return L * (2 * d * r + r + d) + 2 * L * d
    if method_name == "prelayer":
        return L * d * (kw["prefix_length"] + kw["infix_length"])
    if method_name == "preembed":
        return d * (kw["prefix_length"] + kw["infix_length"])
    if method_name == "bitfit":  # bias vectors, counted by hand per family
        ff = 4 * d if family in ("gpt2", "gptj") else 64
        per_block = {
            "gpt2": d + 3 * d + d + d + ff + d,  # ln_1, c_attn, attn.c_proj, ln_2, c_fc, mlp.c_proj: 11 d
            "opt": 4 * d + d + ff + d + d,  # q, k, v, out_proj, attn LN, fc1, fc2, final LN
            "gpt_neox": 3 * d + d + ff + d + 2 * d,  # qkv, dense, h_to_4h, 4h_to_h, two LNs
            "gptj": d + ff + d,  # ln_1, fc_in, fc_out (attention has no biases)
            "qwen2_moe": d + 2 * getattr(cfg, "num_key_value_heads", 0) * (d // tiny.heads),  # q, k, v (RMSNorm: no bias)
        }[family]
        final_norm = 0 if family == "qwen2_moe" else d
        lm_head_bias = V if family == "gptj" else 0
        return L * per_block + final_norm + lm_head_bias
    if method_name == "ft":
        return count_parameters(model)[1]
    if method_name == "ft_top":
        if family == "gpt2":  # 12 d^2 + 13 d per block, + ln_f (2 d)
            return 12 * d * d + 13 * d + 2 * d
        # Other families: the last block's and the final norm's parameters, summed from the model itself.
        last_block = f"{arch.blocks}.{L - 1}."
        return sum(p.numel() for n, p in model.named_parameters() if n.startswith((last_block, f"{arch.final_norm}.")))
    raise AssertionError(method_name)


def test_trainable_count_matches_closed_form(tiny, family, method_name):
    if family in tiny.bias_free and method_name == "bitfit":
        pytest.skip("no bias vectors in this family (checked above)")
    base_total = count_parameters(tiny.model(family))[1]
    model, method, arch = tiny.adapt(family, method_name)
    trainable, total = count_parameters(model)
    assert trainable == closed_form_trainable(tiny, family, method_name, model, arch)
    added = 0 if method_name in ("bitfit", "ft", "ft_top") else trainable
    assert total == base_total + added
