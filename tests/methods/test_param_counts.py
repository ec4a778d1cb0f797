"""Parameter counts of GPT-2 M and L for every method, from shapes alone (meta device), against the paper's closed forms.

paper.md gives |Theta| = 2 * L * d * r for LoRA on W_q and W_v; its own figures (393,216 for GPT-2 M, r = 4) are
2 * (2L) * d * r: each of the 2L adapted matrices has A (r x d) and B (d x r). The tests use the figures.
"""

from __future__ import annotations

import pytest

from lora_ft.build import count_for_config
from lora_ft.config import config_from_dict

GPT2_M = {"name": "gpt2-medium", "L": 24, "d": 1024, "total": 354_823_168}
GPT2_L = {"name": "gpt2-large", "L": 36, "d": 1280, "total": 774_030_080}


def count(model: str, **method) -> dict:
    return count_for_config(config_from_dict({"model": {"name_or_path": model}, "task": {"name": "e2e"}, "method": method}))


@pytest.mark.parametrize("shape", [GPT2_M, GPT2_L], ids=["gpt2-medium", "gpt2-large"])
def test_base_model_sizes(shape):
    assert count(shape["name"], name="ft")["total"] == shape["total"]


@pytest.mark.parametrize("shape, rank, expected", [(GPT2_M, 4, 393_216), (GPT2_L, 4, 737_280)], ids=["M", "L"])
def test_lora_qv(shape, rank, expected):
    L, d = shape["L"], shape["d"]
    report = count(shape["name"], name="lora", rank=rank, targets=["q", "v"])
    assert report["trainable"] == expected == 2 * (2 * L) * d * rank
    assert report["total"] == shape["total"] + expected
    # per module: A and B of q and v stacked in the fused c_attn
    assert report["by_kind"] == {
        "transformer.h.*.attn.c_attn.lora_A": L * 2 * rank * d,
        "transformer.h.*.attn.c_attn.lora_B": L * 2 * d * rank,
    }


def test_ft_top2_gpt2_medium():
    d = GPT2_M["d"]
    per_block = 12 * d * d + 13 * d  # c_attn 3d^2+3d, c_proj d^2+d, c_fc 4d^2+4d, c_proj 4d^2+d, two LayerNorms 4d
    report = count("gpt2-medium", name="ft_top", top_k=2)
    assert report["trainable"] == 25_194_496 == 2 * per_block + 2 * d


@pytest.mark.parametrize(
    "shape, bottleneck, expected",
    [(GPT2_M, 6, 368_784), (GPT2_M, 224, 11_089_152), (GPT2_L, 8, 875_808), (GPT2_L, 248, 23_002_848)],
    ids=["M-6", "M-224", "L-8", "L-248"],
)
def test_adapter_l(shape, bottleneck, expected):
    L, d, r = shape["L"], shape["d"], bottleneck
    assert count(shape["name"], name="adapter_l", bottleneck=r)["trainable"] == expected == L * (2 * d * r + r + d) + 2 * L * d


@pytest.mark.parametrize("bottleneck", [1, 8])
def test_adapter_h(bottleneck):
    L, d, r = GPT2_M["L"], GPT2_M["d"], bottleneck
    assert count("gpt2-medium", name="adapter_h", bottleneck=r)["trainable"] == 2 * L * (2 * d * r + r + d)


@pytest.mark.parametrize("shape", [GPT2_M, GPT2_L], ids=["gpt2-medium", "gpt2-large"])
def test_bitfit(shape):
    # per block: ln_1 d, c_attn 3d, attn.c_proj d, ln_2 d, c_fc 4d, mlp.c_proj d = 11 d; plus ln_f d
    L, d = shape["L"], shape["d"]
    assert count(shape["name"], name="bitfit")["trainable"] == L * 11 * d + d  # GPT-2 M: 271,360


def test_prefix_methods():
    L, d = GPT2_M["L"], GPT2_M["d"]
    assert count("gpt2-medium", name="preembed", prefix_length=256, infix_length=8)["trainable"] == d * (256 + 8)
    assert count("gpt2-medium", name="prelayer", prefix_length=8, infix_length=8)["trainable"] == L * d * (8 + 8)
