"""Exports: a peft adapter that peft loads into the same logits; a merged model that plain transformers loads likewise."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from lora_ft.checkpoint import save_trained
from lora_ft.config import config_from_dict
from lora_ft.export import ExportError, export_merged, export_peft, export_run
from lora_ft.methods.lora import LoraLayer, lora_layers


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def trained_lora(tiny, family: str, **kwargs):
    kwargs = {"rank": 2, "alpha": 8.0, "dropout": 0.0, "targets": ["q", "v"], **kwargs}
    model, method, arch = tiny.adapt(family, "lora", **kwargs)
    tiny.perturb(model, std=0.2)  # stands in for training: B nonzero
    return model, method, arch


def load_in_peft(tiny, family: str, out_dir):
    from peft import PeftModel

    return PeftModel.from_pretrained(tiny.model(family), str(out_dir)).eval()  # same seed: the same base weights


PEFT_CASES = [
    ("gpt2", {}),  # q, v on the fused Conv1D c_attn: rank 2r, alpha 2 alpha
    ("gpt_neox", {}),  # q, v on the per-head fused query_key_value
    ("llama", {}),
    ("opt", {}),
    ("gptj", {}),
    ("gpt2", {"targets": ["q", "v", "o"]}),  # c_attn rank 4 (2 slices), c_proj rank 2: patterns
    ("llama", {"targets": ["q", "v", "o"], "rank_per_target": {"o": 3}}),
    ("gpt_neox", {"targets": ["k"], "layers": [1]}),
    ("phi3", {}),  # q, v on the fused qkv_proj, v narrower than q (grouped-query attention): rank 2r
    ("gemma", {}),
    ("mixtral", {}),
]


@pytest.mark.parametrize("family, kwargs", PEFT_CASES, ids=[f"{f}-{'-'.join(f'{k}' for k in kw) or 'qv'}" for f, kw in PEFT_CASES])
def test_peft_export_reproduces_logits(tiny, family, kwargs, tmp_path):
    model, method, arch = trained_lora(tiny, family, **kwargs)
    ids = tiny.ids()
    expected = logits(model, ids)
    assert not torch.allclose(expected, logits(tiny.model(family), ids), atol=1e-4)

    export_peft(model, method, arch, tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (tmp_path / "adapter").iterdir()}
    loaded = load_in_peft(tiny, family, tmp_path / "adapter")
    torch.testing.assert_close(logits(loaded, ids), expected, rtol=1e-5, atol=1e-5)
    # the export left our model as it was
    assert all(not layer.merged for layer in lora_layers(model).values())
    assert all(p.requires_grad == (".lora_" in n) for n, p in model.named_parameters())
    torch.testing.assert_close(logits(model, ids), expected, rtol=0, atol=0)


def test_peft_export_of_fused_qv_is_rank_2r(tiny, tmp_path):
    model, method, arch = trained_lora(tiny, "gpt2", rank=2, alpha=8.0)
    export_peft(model, method, arch, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["fan_in_fan_out"]) == (4, 16, True)  # r' = 2r, alpha' = 2 alpha
    assert config["rank_pattern"] == {} and config["alpha_pattern"] == {}
    with safe_open(str(tmp_path / "adapter_model.safetensors"), "pt") as f:
        b = f.get_tensor("base_model.model.transformer.h.0.attn.c_attn.lora_B.weight")
        a = f.get_tensor("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight")
    d = tiny.hidden
    assert a.shape == (4, d) and b.shape == (3 * d, 4)
    # B' block structure: q rows use columns 0..r-1 only, k rows nothing, v rows columns r..2r-1 only
    assert torch.count_nonzero(b[:d, 2:]) == 0 and torch.count_nonzero(b[d : 2 * d]) == 0 and torch.count_nonzero(b[2 * d :, :2]) == 0
    layer = model.get_submodule("transformer.h.0.attn.c_attn")
    assert torch.equal(b[:d, :2], layer.lora_B[0]) and torch.equal(b[2 * d :, 2:], layer.lora_B[1])


def test_peft_export_patterns_for_mixed_ranks(tiny, tmp_path):
    model, method, arch = trained_lora(tiny, "llama", targets=["q", "v", "o"], rank_per_target={"o": 3})
    export_peft(model, method, arch, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["r"] == 2
    assert sorted(config["rank_pattern"].values()) == [3, 3]
    assert all("o_proj" in key for key in config["rank_pattern"])


@pytest.mark.parametrize("method_name", ["adapter_h", "prelayer", "bitfit", "ft"])
def test_peft_export_is_for_lora_only(tiny, method_name, tmp_path):
    model, method, arch = tiny.adapt("gpt2", method_name)
    with pytest.raises(ExportError, match="cannot be exported as 'peft'"):
        export_peft(model, method, arch, tmp_path)


def test_peft_export_refuses_a_merged_model(tiny, tmp_path):
    model, method, arch = trained_lora(tiny, "gpt2")
    method.merge(model)
    with pytest.raises(ExportError, match="unmerge"):
        export_peft(model, method, arch, tmp_path)


# -------------------------------------------------------------------------------------------------------------- merged

MERGED_CASES = [("gpt2", "lora"), ("gpt_neox", "lora"), ("llama", "lora"), ("gpt2", "bitfit"), ("opt", "ft"), ("gptj", "ft_top"),
                ("phi3", "lora"), ("gemma", "lora"), ("qwen2_moe", "bitfit")]


@pytest.mark.parametrize("family, method_name", MERGED_CASES)
def test_merged_export_loads_in_plain_transformers(tiny, family, method_name, tmp_path):
    if method_name == "lora":
        model, method, arch = trained_lora(tiny, family, targets=["q", "v", "mlp_up"])
    else:
        model, method, arch = tiny.adapt(family, method_name)
        tiny.perturb(model, std=0.2)
    ids = tiny.ids()
    expected = logits(model, ids)
    assert not torch.allclose(expected, logits(tiny.model(family), ids), atol=1e-4)

    export_merged(model, method, arch, None, tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    assert not any(type(m).__module__.startswith("lora_ft.") for m in loaded.modules())
    plain_keys = set(tiny.model(family).state_dict())
    assert set(loaded.state_dict()) == plain_keys
    torch.testing.assert_close(logits(loaded, ids), expected, rtol=1e-5, atol=1e-5)
    if method_name == "lora":  # our model is untouched: still unmerged, its base weights the pretrained ones
        assert all(isinstance(m, LoraLayer) and not m.merged for m in lora_layers(model).values())
        torch.testing.assert_close(logits(model, ids), expected, rtol=0, atol=0)


def test_merged_export_saves_the_tokenizer(tiny, gpt2_tokenizer, tmp_path):
    model, method, arch = trained_lora(tiny, "gpt2")
    export_merged(model, method, arch, gpt2_tokenizer, tmp_path)
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path))
    text = "name : Blue Spice | Type : coffee shop"
    assert reloaded(text)["input_ids"] == gpt2_tokenizer(text)["input_ids"] == [3672, 1058, 4518, 43537, 930, 5994, 1058, 6891, 6128]


@pytest.mark.parametrize("method_name", ["adapter_h", "adapter_l", "prelayer", "preembed"])
def test_unmergeable_methods_refuse_a_merged_export(tiny, method_name, tmp_path):
    model, method, arch = tiny.adapt("gpt2", method_name)
    with pytest.raises(ExportError, match="cannot be merged"):
        export_merged(model, method, arch, None, tmp_path)
    assert not any(tmp_path.iterdir())


def test_export_never_overwrites_a_non_empty_directory(tiny, tmp_path):
    model, method, arch = trained_lora(tiny, "gpt2")
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not empty"):
        export_merged(model, method, arch, None, tmp_path)
    with pytest.raises(ExportError, match="not empty"):
        export_peft(model, method, arch, tmp_path)
    # --overwrite replaces only what lora-ft wrote: a file of the user's is never deleted, nor written beside
    with pytest.raises(ExportError, match="notes.txt"):
        export_peft(model, method, arch, tmp_path, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"] and (tmp_path / "notes.txt").read_text() == "keep me"


# ---------------------------------------------------------------------------------------------------------- from a run


@pytest.mark.parametrize("fmt", ["peft", "merged"])
def test_export_run_from_a_run_directory(tiny, tiny_model_dir, gpt2_tokenizer_dir, fmt, tmp_path):
    from lora_ft.build import adapted_model
    from lora_ft.run_dir import CONFIG_FILE

    run_dir = tmp_path / "run"
    cfg = config_from_dict({
        "model": {"name_or_path": str(tiny_model_dir("gpt2")), "tokenizer": str(gpt2_tokenizer_dir)},
        "task": {"name": "e2e"},
        "method": {"name": "lora", "rank": 2, "alpha": 8.0, "targets": ["q", "v"]},
        "output": {"dir": str(run_dir)},
    })
    built = adapted_model(cfg)
    tiny.perturb(built.model, std=0.2)
    save_trained(built.model, built.method, run_dir)
    (run_dir / CONFIG_FILE).write_text(cfg.to_yaml())
    ids = tiny.ids()
    expected = logits(built.model.eval(), ids)

    out = export_run(run_dir, tmp_path / "out", fmt=fmt)
    if fmt == "peft":
        loaded = load_in_peft(tiny, "gpt2", out)
    else:
        loaded = AutoModelForCausalLM.from_pretrained(str(out)).eval()
        assert (out / "tokenizer.json").is_file()
    torch.testing.assert_close(logits(loaded, ids), expected, rtol=1e-5, atol=1e-5)
