"""save_trained then load_trained into a freshly adapted model reproduces the trained model exactly, for every method."""

from __future__ import annotations

import pytest
import torch

from lora_ft.checkpoint import TRAINED_FILE, load_trained, read_trained, save_trained


def model_input(tiny, method_name: str) -> torch.Tensor:
    ids = tiny.ids()
    if method_name in ("prelayer", "preembed"):
        kw = tiny.method_kwargs[method_name]
        virtual = torch.arange(tiny.vocab, tiny.vocab + kw["prefix_length"] + kw["infix_length"]).expand(ids.shape[0], -1)
        ids = torch.cat([virtual, ids], dim=1)
    return ids


def test_save_then_load_reproduces_outputs(tiny, family, method_name, tmp_path):
    if family in tiny.bias_free and method_name == "bitfit":
        pytest.skip("no bias vectors in this family")
    trained, method, _ = tiny.adapt(family, method_name)
    tiny.perturb(trained, std=0.2)  # stands in for training
    path = save_trained(trained, method, tmp_path)
    assert path == tmp_path / TRAINED_FILE
    tensors, metadata = read_trained(tmp_path)
    assert metadata["method"] == method_name
    assert sum(t.numel() for t in tensors.values()) == sum(p.numel() for p in trained.parameters() if p.requires_grad)

    fresh, _, _ = tiny.adapt(family, method_name)
    ids = model_input(tiny, method_name)
    with torch.no_grad():
        expected = trained(ids).logits
        assert not torch.allclose(fresh(ids).logits, expected, atol=1e-4)  # the load has something to restore
        load_trained(fresh, tmp_path)
        torch.testing.assert_close(fresh(ids).logits, expected, rtol=0, atol=0)


def test_loading_into_another_config_fails_clearly(tiny, tmp_path):
    trained, method, _ = tiny.adapt("gpt2", "lora", rank=2, alpha=8.0, dropout=0.0, targets=["q", "v"])
    save_trained(trained, method, tmp_path)
    other, _, _ = tiny.adapt("gpt2", "lora", rank=2, alpha=8.0, dropout=0.0, targets=["q", "v", "o"])
    with pytest.raises(ValueError, match="does not fit this model"):
        load_trained(other, tmp_path)
