"""Every peft `PeftType`, walked: each one either works in lora-ft's harness on a tiny model or is refused by
`config validate` in one line saying why, before any model loads (lora_ft/methods/peft_types.py).

"Works" here means, on a tiny LLaMA (grouped-query attention): get_peft_model applies it with peft's count equal to
lora-ft's; it trains (a few steps of the completion loss change the model); packed batches give the padded batch's loss
and gradients (training packs by default); save_pretrained and loading the folder back (`eval --adapter`'s path) give
the same logits and the same beam-search output; merging (where peft can) changes the logits by rounding only.
The whole Trainer (train, resume, export, decode, score) runs on a few of them in tests/test_peft_runs.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lora_ft import beam_cache
from lora_ft.config import config_from_dict
from lora_ft.generate import BeamSearchConfig, beam_search
from lora_ft.methods import method_class
from lora_ft.methods.peft_method import load_peft_adapter
from lora_ft.methods.peft_types import PROMPT_TYPES, REFUSED, TUNER_TYPES, known_types
from lora_ft.models import architecture_for
from lora_ft.packing import pack, padded
from lora_ft.schema import ConfigError

peft = pytest.importorskip("peft")

pytestmark = pytest.mark.usefixtures("one_thread")

# Settings that fit the tiny model (hidden 32, k/v 16 wide): peft's defaults are sized for real models.
TINY = {
    "LORA": {"r": 2, "use_dora": True},
    "PROMPT_TUNING": {"num_virtual_tokens": 3},
    "P_TUNING": {"num_virtual_tokens": 3, "encoder_hidden_size": 8},
    "FOURIERFT": {"n_frequency": 100},
    "VBLORA": {"vector_length": 8, "num_vectors": 32, "r": 4},
    "MISS": {"r": 8},
    "ROAD": {"group_size": 8},
    "TRAINABLE_TOKENS": {"token_indices": [3, 4, 5]},
    "SHIRA": {"r": 4},
    "C3A": {"block_size": 8},
    "WAVEFT": {"n_frequency": 64},
    "PSOFT": {"r": 4},
    "ADAPTION_PROMPT": {"adapter_len": 3, "adapter_layers": 2},
    "VERA": {"r": 4},
}
ALL_TYPES = [t.value for t in peft.PeftType]
WORKING = [t for t in ALL_TYPES if t not in REFUSED]


def test_every_peft_type_is_listed_as_working_or_refused():
    """A type a newer peft adds fails here until peft_types.py says what lora-ft does with it."""
    unlisted = sorted(set(ALL_TYPES) - set(known_types()))
    assert not unlisted, f"peft types lora-ft does not list: {unlisted} (lora_ft/methods/peft_types.py)"
    assert not set(TUNER_TYPES) & set(REFUSED) and not set(PROMPT_TYPES) & set(REFUSED)


def config_with(peft_section: dict) -> dict:
    return {"model": {"name_or_path": "nobody/not-a-model-that-exists"}, "task": {"name": "e2e"},
            "method": {"name": "peft", "peft": peft_section}}


@pytest.mark.parametrize("peft_type", sorted(REFUSED))
def test_refused_types_fail_validation_in_one_line_before_any_model_loads(peft_type, monkeypatch):
    import lora_ft.models.loading as loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(ConfigError) as info:
        config_from_dict(config_with({"peft_type": peft_type.lower()}), source="peft.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert f"peft_type {peft_type} cannot train in lora-ft's loop: " in message
    assert message.startswith("peft.yaml: method")


def test_alora_is_refused_and_unknown_types_and_fields_are_named():
    with pytest.raises(ConfigError, match="aLoRA starts its update after the invocation tokens"):
        config_from_dict(config_with({"peft_type": "LORA", "alora_invocation_tokens": [5, 6]}))
    with pytest.raises(ConfigError, match="'LORRA' is not a peft type lora-ft knows; did you mean 'LORA'"):
        config_from_dict(config_with({"peft_type": "lorra"}))
    with pytest.raises(ConfigError, match="peft needs a peft_type"):
        config_from_dict(config_with({"r": 8}))
    cfg = config_from_dict(config_with({"peft_type": "LORA", "rr": 8}))  # field names need peft: checked before loading
    with pytest.raises(ConfigError, match="method.peft.rr: LoraConfig has no field 'rr'; did you mean 'r'"):
        cfg.method.config.check_architecture(None)
    cfg = config_from_dict(config_with({"peft_type": "LORA", "layers_pattern": "layers"}))  # peft's own check
    with pytest.raises(ConfigError, match=r"method.peft \(LORA\): peft refuses it: .*layers_to_transform"):
        cfg.method.config.check_architecture(None)


def adapted(tiny, peft_type: str, seed: int = 0):
    from lora_ft.methods.configs import PeftMethodConfig

    model = tiny.model("llama", seed=seed)
    arch = architecture_for(model)
    method = method_class("peft")(PeftMethodConfig(peft={"peft_type": peft_type, **TINY.get(peft_type, {})}))
    torch.manual_seed(seed)
    method.apply(model, arch)
    return model, method, arch


def batch(tiny, method) -> dict:
    from lora_ft.data import CausalLMCollator

    prefix, _ = method.virtual_token_counts()
    virtual = list(range(tiny.vocab, tiny.vocab + prefix))
    features = []
    for row, (context, completion) in zip(tiny.ids(batch=3, length=11, seed=5).tolist(), [(4, 5), (2, 3), (6, 5)]):
        prompt = virtual + row[:context]
        target = row[context: context + completion]
        features.append({"input_ids": prompt + target, "labels": [-100] * len(prompt) + target})
    return CausalLMCollator(pad_token_id=0)(features)


def loss_and_grads(model, layout):
    from lora_ft.loss import completion_loss, completion_positions

    model.zero_grad()
    with completion_positions(model, layout.labels, layout.example) as (targets, _):
        logits = model(**layout.inputs).logits
    loss_sum, tokens = completion_loss(logits, targets, 0.1)
    (loss_sum / tokens).backward()
    return float(loss_sum / tokens), [p.grad.clone() for p in model.parameters() if p.requires_grad]


def decode(model, prompts):
    config = BeamSearchConfig(num_beams=3, max_new_tokens=6, stop_token_ids=(2,), no_repeat_ngram_size=2)
    return beam_search(model, prompts, config, pad_token_id=0, device="cpu")


@pytest.mark.parametrize("peft_type", WORKING)
def test_working_types_train_pack_save_load_and_decode(tiny, peft_type, tmp_path, monkeypatch):
    model, method, arch = adapted(tiny, peft_type)
    assert method.peft_trainable == sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    model.train()
    data = batch(tiny, method)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    before = model(**padded(data).inputs).logits.detach()
    for _ in range(3):
        loss_and_grads(model, padded(data))
        optimizer.step()
    model.eval()
    after = model(**padded(data).inputs).logits.detach()
    assert not torch.allclose(before, after, atol=1e-6), "training changed nothing"
    # packed = padded (dropout is 0 in peft's defaults here)
    padded_loss, padded_grads = loss_and_grads(model, padded(data))
    packed_loss, packed_grads = loss_and_grads(model, pack(data, 16))
    assert packed_loss == pytest.approx(padded_loss, rel=1e-5)
    for got, expected in zip(packed_grads, padded_grads):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    # save_pretrained, then the folder loaded onto a fresh base as `eval --adapter` loads it
    method.peft_model.save_pretrained(str(tmp_path))
    fresh = tiny.model("llama")
    loaded = load_peft_adapter(fresh, arch, str(tmp_path))
    assert loaded.peft_type == peft_type and loaded.virtual_token_counts() == method.virtual_token_counts()
    prefix = list(range(tiny.vocab, tiny.vocab + method.virtual_token_counts()[0]))
    ids = torch.tensor([prefix + [5, 17, 9, 33, 21]])
    with torch.no_grad():
        torch.testing.assert_close(fresh(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=1e-6)
    prompts = [prefix + [5, 17, 9, 33, 21], prefix + [40, 7]]
    expected = decode(model, prompts)
    assert decode(fresh, prompts) == expected
    monkeypatch.setattr(beam_cache, "_shareable", lambda model, cache: False)  # transformers' own cache, reordered
    assert decode(model, prompts) == expected
    if method.mergeable:
        with torch.no_grad():
            unmerged = model(input_ids=ids).logits
            method.merge(model)
            torch.testing.assert_close(model(input_ids=ids).logits, unmerged, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "configs" / "peft").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_the_extended_table3_configs_validate(path, monkeypatch, capsys):
    """configs/peft: DoRA, rsLoRA, VeRA and IA3 at the mini Table 3's budget (issue 19, item 6 trains them)."""
    from lora_ft.cli import main

    monkeypatch.chdir(path.parents[2])  # the configs name data files relative to the repository
    assert main(["config", "validate", str(path)]) == 0, capsys.readouterr().err
