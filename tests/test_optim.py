"""The paper's AdamW (lora_ft/optim.py) against the formula computed by hand in double precision, the cases where
torch.optim.AdamW gives another result, state round-trips, and the `training.optimizer` config key."""

from __future__ import annotations

import copy
import math
import typing
from pathlib import Path

import pytest
import torch
import yaml

from lora_ft.config import TrainingConfig, config_from_dict
from lora_ft.optim import OPTIMIZERS, PaperAdamW, build_optimizer, describe_optimizer
from lora_ft.schema import ConfigError

REPO = Path(__file__).resolve().parents[1]


def reference_steps(p0, grads, lrs, *, betas=(0.9, 0.999), eps=1e-6, wd=0.0):
    """The authors' AdamW on a list of floats, by hand: one (grad list, lr) per step; returns the weights after each."""
    b1, b2 = betas
    p, m, v = list(p0), [0.0] * len(p0), [0.0] * len(p0)
    history = []
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        step_size = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        for i in range(len(p)):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
            p[i] = p[i] - step_size * m[i] / (math.sqrt(v[i]) + eps)  # eps before the bias correction
            p[i] = p[i] - lr * wd * p[i]  # decay of the updated weight
        history.append(list(p))
    return history


def run(optimizer_cls, p0, grads, lrs, **kwargs):
    """Drive a torch optimizer with the given gradients and a per-step learning rate (as a scheduler would set it)."""
    param = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float32))
    optimizer = optimizer_cls([param], lr=lrs[0], **kwargs)
    history = []
    for g, lr in zip(grads, lrs):
        for group in optimizer.param_groups:
            group["lr"] = lr
        param.grad = torch.tensor(g, dtype=torch.float32)
        optimizer.step()
        history.append(param.detach().clone())
    return history


P0 = [0.5, -1.25, 2.0, 0.003]
GRADS = [[0.1, -0.2, 0.03, 1e-4], [-0.05, 0.4, 0.02, -2e-4], [0.2, 0.1, -0.3, 5e-5], [0.01, -0.01, 0.5, 0.0]]
LRS = [1e-2, 2e-2, 1.5e-2, 5e-3]  # a changing lr: the decay must use each step's scheduled lr


def test_one_step_matches_the_formula():
    expected = reference_steps(P0, GRADS[:1], LRS[:1], eps=1e-6, wd=0.01)
    got = run(PaperAdamW, P0, GRADS[:1], LRS[:1], betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01)
    torch.testing.assert_close(got[0], torch.tensor(expected[0], dtype=torch.float32), rtol=1e-6, atol=1e-9)
    # step 1 by hand for the first weight: m = 0.01, v = 1e-5, step size = lr * sqrt(0.001) / 0.1
    p = 0.5 - 1e-2 * math.sqrt(1e-3) / 0.1 * 0.01 / (math.sqrt(1e-5) + 1e-6)
    p -= 1e-2 * 0.01 * p
    assert got[0][0].item() == pytest.approx(p, rel=1e-6)


def test_several_steps_with_weight_decay_and_changing_lr_match_the_formula():
    expected = reference_steps(P0, GRADS, LRS, betas=(0.9, 0.98), eps=1e-3, wd=0.1)
    got = run(PaperAdamW, P0, GRADS, LRS, betas=(0.9, 0.98), eps=1e-3, weight_decay=0.1)
    for step, (g, e) in enumerate(zip(got, expected), start=1):
        torch.testing.assert_close(g, torch.tensor(e, dtype=torch.float32), rtol=1e-6, atol=1e-9, msg=f"step {step}")


def test_eps_before_the_bias_correction_differs_from_torch():
    """With eps comparable to |g|, adding eps before the correction (authors) and after it (torch) differ a lot."""
    p0, grads, lrs = [1.0, 1.0], [[1e-3, -1e-3]], [0.1]
    paper = run(PaperAdamW, p0, grads, lrs, eps=1e-3)[0]
    ours_by_hand = reference_steps(p0, grads, lrs, eps=1e-3)[0]
    torch_adamw = run(torch.optim.AdamW, p0, grads, lrs, eps=1e-3, weight_decay=0.0)[0]
    torch.testing.assert_close(paper, torch.tensor(ours_by_hand, dtype=torch.float32))
    # authors: 0.1 * sqrt(1e-3)/0.1 * 1e-4 / (sqrt(1e-9) + 1e-3) = 0.0306...; torch: 0.1 * 1e-3 / (1e-3 + 1e-3) = 0.05
    assert 1.0 - paper[0].item() == pytest.approx(0.1 * math.sqrt(1e-3) * 1e-3 / (math.sqrt(1e-9) + 1e-3), rel=1e-5)
    assert 1.0 - torch_adamw[0].item() == pytest.approx(0.05, rel=1e-5)


def test_weight_decay_after_the_update_differs_from_torch():
    """eps = 0 makes the two bias corrections equal: what is left is the order of decay and update."""
    p0, grads, lrs = [1.0], [[0.5]], [0.1]
    paper = run(PaperAdamW, p0, grads, lrs, eps=0.0, weight_decay=0.5)[0].item()
    torch_adamw = run(torch.optim.AdamW, p0, grads, lrs, eps=0.0, weight_decay=0.5)[0].item()
    assert paper == pytest.approx((1.0 - 0.1) * (1 - 0.1 * 0.5), rel=1e-6)  # update first: 0.9, then decayed
    assert torch_adamw == pytest.approx(1.0 * (1 - 0.1 * 0.5) - 0.1, rel=1e-6)  # decayed first, then updated
    assert abs(paper - torch_adamw) == pytest.approx(0.1 * 0.1 * 0.5, rel=1e-4)


def test_without_bias_correction_the_step_size_is_lr():
    got = run(PaperAdamW, [0.0], [[2.0]], [0.1], eps=0.0, correct_bias=False)[0].item()
    assert got == pytest.approx(-0.1 * 0.2 / math.sqrt(0.004), rel=1e-6)  # m = 0.2, v = 0.004


def test_a_parameter_without_gradient_is_left_alone():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    optimizer = PaperAdamW([a, b], lr=0.1, weight_decay=0.1)
    a.grad = torch.ones(2)
    optimizer.step()
    assert torch.equal(b, torch.ones(2)) and b not in optimizer.state


def test_low_precision_parameters_are_updated_in_float32():
    full = torch.nn.Parameter(torch.tensor(P0))
    half = torch.nn.Parameter(torch.tensor(P0, dtype=torch.bfloat16))
    for p in (full, half):
        p.grad = torch.tensor(GRADS[0], dtype=p.dtype)
    grad_seen = half.grad.float()
    full.grad = grad_seen.clone()  # the bf16 gradient, exactly
    PaperAdamW([full], lr=0.01, weight_decay=0.01).step()
    optimizer = PaperAdamW([half], lr=0.01, weight_decay=0.01)
    optimizer.step()
    full_from_bf16_start = torch.nn.Parameter(torch.tensor(P0, dtype=torch.bfloat16).float())
    full_from_bf16_start.grad = grad_seen
    PaperAdamW([full_from_bf16_start], lr=0.01, weight_decay=0.01).step()
    assert torch.equal(half.detach(), full_from_bf16_start.detach().to(torch.bfloat16))
    assert optimizer.state[half]["exp_avg"].dtype == torch.float32


@pytest.mark.parametrize("step_as_tensor", [False, True])
def test_state_dict_round_trip_resumes_identically(step_as_tensor):
    torch.manual_seed(0)
    shapes = [(3, 4), (4,)]
    grads = [[torch.randn(s) for s in shapes] for _ in range(6)]

    def steps(params, optimizer, grad_list):
        for gs in grad_list:
            for p, g in zip(params, gs):
                p.grad = g.clone()
            optimizer.step()

    start = [torch.randn(s) for s in shapes]
    straight = [torch.nn.Parameter(t.clone()) for t in start]
    steps(straight, PaperAdamW(straight, lr=1e-2, weight_decay=0.01), grads)

    first = [torch.nn.Parameter(t.clone()) for t in start]
    optimizer = PaperAdamW(first, lr=1e-2, weight_decay=0.01)
    steps(first, optimizer, grads[:3])
    saved = copy.deepcopy(optimizer.state_dict())
    for entry in saved["state"].values():  # plain tensors and an int step: storable as safetensors + JSON
        assert isinstance(entry["step"], int)
        assert all(isinstance(entry[k], torch.Tensor) for k in ("exp_avg", "exp_avg_sq"))
    if step_as_tensor:  # as a checkpoint store that keeps every number as a tensor would give it back
        for entry in saved["state"].values():
            entry["step"] = torch.tensor(float(entry["step"]))
    resumed = [torch.nn.Parameter(p.detach().clone()) for p in first]
    optimizer2 = PaperAdamW(resumed, lr=1e-2, weight_decay=0.01)
    optimizer2.load_state_dict(saved)
    steps(resumed, optimizer2, grads[3:])
    assert all(isinstance(entry["step"], int) for entry in optimizer2.state.values())
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)


# ---- config ----------------------------------------------------------------------------------------------------------


def test_config_names_are_the_registry():
    hint = typing.get_type_hints(TrainingConfig)["optimizer"]
    assert set(typing.get_args(hint)) == set(OPTIMIZERS)


def test_default_is_the_papers_adamw():
    training = TrainingConfig()
    assert training.optimizer == "adamw_paper"
    assert isinstance(build_optimizer([torch.nn.Parameter(torch.ones(1))], training), PaperAdamW)
    torch_choice = TrainingConfig(optimizer="adamw_torch")
    built = build_optimizer([torch.nn.Parameter(torch.ones(1))], torch_choice)
    assert type(built) is torch.optim.AdamW
    assert describe_optimizer(torch_choice)["class"] == "torch.optim.adamw.AdamW"
    record = describe_optimizer(training)
    assert record["name"] == "adamw_paper" and record["class"] == "lora_ft.optim.PaperAdamW"
    assert record["eps"] == training.adam_epsilon and record["weight_decay"] == training.weight_decay


def test_an_unknown_optimizer_is_a_one_line_config_error():
    data = {"model": {"name_or_path": "gpt2"}, "task": {"name": "e2e"}, "method": {"name": "lora"},
            "training": {"optimizer": "adamw_papr"}}
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, "x.yaml")
    message = str(info.value)
    assert "\n" not in message and "training.optimizer" in message
    assert "'adamw_paper' | 'adamw_torch'" in message and "did you mean 'adamw_paper'" in message


PAPER_RECIPE_CONFIGS = sorted(
    [*REPO.glob("configs/e2e_*.yaml"), *REPO.glob("configs/*_gpt3standin_*.yaml"), *REPO.glob("configs/sweeps/*.yaml"),
     REPO / "configs" / "demo_e2e_cpu.yaml"]
)


@pytest.mark.parametrize("path", PAPER_RECIPE_CONFIGS, ids=lambda p: p.name)
def test_paper_recipe_configs_name_the_papers_adamw(path):
    assert len(PAPER_RECIPE_CONFIGS) >= 36
    training = yaml.safe_load(path.read_text())["training"]
    assert training["optimizer"] == "adamw_paper", path


# ---- the Trainer -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["adamw_paper", "adamw_torch"])
def test_the_trainer_uses_and_records_the_configured_optimizer(tmp_path, name):
    from lora_ft.results import read_results
    from lora_ft.train import train
    from tiny_runs import tiny_run_config

    config = tiny_run_config(tmp_path / name, optimizer=name, epochs=1, max_steps=1)
    config["task"]["max_train_examples"] = 8
    run_dir = train(config_from_dict(config, "tiny.yaml"))
    record = read_results(run_dir).extra["optimizer"]
    assert record == describe_optimizer(config_from_dict(config, "tiny.yaml").training)
    assert record["name"] == name and record["lr"] == 5e-3
