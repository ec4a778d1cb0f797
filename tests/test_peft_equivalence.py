"""peft's LoRA and lora-ft's LoRA are the same function where the adapted weights are separate projections (LLaMA's
q_proj and v_proj): trained by lora-ft's Trainer with the same rank, alpha, dropout, targets and initial A, they give
the same loss at every step (rel 1e-5) and the same weights (1e-6).

Where a projection is fused (GPT-2's c_attn holds q, k and v), they differ by design: peft's LoRA on c_attn is ONE
update of the whole q|k|v output (k included), the paper's (lora-ft's) is one update per q and per v slice, k untouched.
At r=4 both have 4dr parameters per block, 393,216 on GPT-2 M (A r x d and B 3d x r, against 2 x (A r x d + B d x r)):
the same count, another model (the second test shows both, and where they differ)."""

from __future__ import annotations

import pytest
import torch

from lora_ft import train as train_module
from lora_ft.build import count_for_config, seeded_adapted_model
from lora_ft.checkpoint import read_trained
from lora_ft.config import config_from_dict
from lora_ft.methods.lora import lora_layers
from lora_ft.methods.peft_method import PeftMethod
from lora_ft.train import Trainer, train
from tiny_runs import tiny_llama_run_config

pytestmark = pytest.mark.usefixtures("one_thread")

TRAINING_STEP = Trainer._training_step
RANK, ALPHA, DROPOUT = 2, 4.0, 0.1
LORA = {"name": "lora", "rank": RANK, "alpha": ALPHA, "dropout": DROPOUT, "targets": ["q", "v"], "init_a": "kaiming"}
PEFT = {"name": "peft", "peft": {"peft_type": "LORA", "r": RANK, "lora_alpha": ALPHA, "lora_dropout": DROPOUT,
                                 "target_modules": ["q_proj", "v_proj"]}}


def run(tmp_path, name: str, method: dict, monkeypatch) -> tuple[list[float], dict]:
    """Train the tiny LLaMA run with `method`; the loss of every step and the trained tensors."""
    config = tiny_llama_run_config(tmp_path / name)
    config["method"] = method
    losses: list[float] = []

    def recording(self, batch):
        loss_sum, tokens = TRAINING_STEP(self, batch)
        losses.append(float(loss_sum / tokens))
        return loss_sum, tokens

    monkeypatch.setattr(Trainer, "_training_step", recording)
    run_dir = train(config_from_dict(config))
    return losses, read_trained(run_dir)[0]


def test_peft_lora_equals_lora_ft_lora_on_separate_projections(tmp_path, monkeypatch):
    # lora-ft's A, as its LoRA draws it (kaiming, loralib's init) for this config and seed: peft starts from the same
    lora_cfg = tiny_llama_run_config(tmp_path / "draw")
    lora_cfg["method"] = LORA
    initial_a = {name: layer.lora_A.detach().clone()
                 for name, layer in lora_layers(seeded_adapted_model(config_from_dict(lora_cfg)).model).items()}
    attach, apply = PeftMethod.attach, train_module.seeded_adapted_model

    def same_a(self, peft_model, model, arch):
        attach(self, peft_model, model, arch)
        with torch.no_grad():
            for name, a in initial_a.items():
                model.get_submodule(name).lora_A["default"].weight.copy_(a)

    def reseeded(cfg):  # peft's init draws more random numbers than lora-ft's: both go on from one RNG state (dropout)
        adapted = apply(cfg)
        torch.manual_seed(cfg.training.seed + 1)
        return adapted

    monkeypatch.setattr(PeftMethod, "attach", same_a)
    monkeypatch.setattr(train_module, "seeded_adapted_model", reseeded)
    ours, our_weights = run(tmp_path, "lora", LORA, monkeypatch)
    theirs, their_weights = run(tmp_path, "peft", PEFT, monkeypatch)

    assert len(ours) == len(theirs) == 8 and ours[0] != ours[-1]
    assert theirs == pytest.approx(ours, rel=1e-5)
    assert len(our_weights) == len(their_weights) == 2 * 2 * 2  # 2 blocks x (q, v) x (A, B)
    for name, tensor in our_weights.items():
        module, factor = name.rsplit(".", 1)
        peft_tensor = their_weights[f"{module}.{factor}.default.weight"]
        ours_as_peft = tensor[0] if factor == "lora_B" else tensor  # lora-ft stacks B per slice: (1, d, r)
        assert not torch.equal(ours_as_peft, initial_a.get(module, torch.zeros_like(ours_as_peft)))  # it trained
        torch.testing.assert_close(peft_tensor, ours_as_peft, rtol=1e-6, atol=1e-6, msg=name)


def test_on_gpt2s_fused_c_attn_the_counts_agree_and_the_models_do_not():
    """GPT-2 M, r=4: lora-ft's q and v updates and peft's one update of c_attn count the same, 393,216."""
    model = {"name_or_path": "gpt2-medium"}
    paper = count_for_config(config_from_dict({"model": model, "task": {"name": "e2e"}, "method": {
        "name": "lora", "rank": 4, "alpha": 32, "targets": ["q", "v"]}}))
    peft = count_for_config(config_from_dict({"model": model, "task": {"name": "e2e"}, "method": {
        "name": "peft", "peft": {"peft_type": "LORA", "r": 4, "lora_alpha": 32, "target_modules": ["c_attn"]}}}))
    L, d, r = 24, 1024, 4
    assert paper["trainable"] == peft["trainable"] == peft["trainable_by_peft"] == 393_216 == L * 4 * d * r
    assert paper["by_kind"] == {"transformer.h.*.attn.c_attn.lora_A": L * 2 * r * d,  # A_q, A_v: r x d each
                                "transformer.h.*.attn.c_attn.lora_B": L * 2 * d * r}  # B_q, B_v: d x r each
    assert peft["by_kind"] == {"transformer.h.*.attn.c_attn.lora_A.default.weight": L * r * d,  # one A: r x d
                               "transformer.h.*.attn.c_attn.lora_B.default.weight": L * 3 * d * r}  # one B: 3d x r


def test_on_a_fused_projection_peft_updates_k_and_the_paper_does_not(tiny):
    """Two steps on a tiny GPT-2: the paper's update of c_attn leaves k's output columns at zero, peft's does not."""
    from lora_ft.methods.configs import PeftMethodConfig
    from lora_ft.models import architecture_for

    deltas = {}
    for name in ("lora", "peft"):
        if name == "lora":
            model, _, _ = tiny.adapt("gpt2", "lora", rank=2, alpha=4.0, dropout=0.0)
        else:
            model = tiny.model("gpt2")
            config = PeftMethodConfig(peft={"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["c_attn"]})
            PeftMethod(config).apply(model, architecture_for(model))
        model.train()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
        for _ in range(2):  # B starts at 0: the first step moves B, the second A too
            model(input_ids=tiny.ids(2, 7)).logits.logsumexp(-1).mean().backward()
            optimizer.step()
            optimizer.zero_grad()
        c_attn = model.transformer.h[0].attn.c_attn
        with torch.no_grad():
            x = torch.eye(tiny.hidden)
            deltas[name] = c_attn(x) - c_attn.base_layer(x)  # the update's output, (inputs, 3 * hidden): [q | k | v]
    h = tiny.hidden
    for name, delta in deltas.items():
        assert delta[:, :h].abs().max() > 0 and delta[:, 2 * h:].abs().max() > 0, name  # q and v move in both
    assert deltas["lora"][:, h:2 * h].abs().max() == 0  # the paper's: k untouched
    assert deltas["peft"][:, h:2 * h].abs().max() > 0  # peft's one update of c_attn: k moves too
