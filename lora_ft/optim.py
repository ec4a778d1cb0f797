"""The optimizers `training.optimizer` names: the paper's AdamW (default) and torch's.

`adamw_paper` is the AdamW of the authors' code (microsoft/LoRA, examples/NLG/src/optimizer.py, run with
--correct_bias as their E2E command does; the same algorithm as the AdamW of transformers <= 4.x, which the authors' NLU
examples train with). Per parameter, with lr the group's current (scheduled) learning rate and t the step count:

    m   = beta1 * m + (1 - beta1) * g
    v   = beta2 * v + (1 - beta2) * g * g
    p   = p - lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)     # eps added BEFORE the bias correction
    p   = p - lr * weight_decay * p                                            # decay of the UPDATED weight

torch.optim.AdamW differs twice: it divides by sqrt(v / (1 - beta2^t)) + eps (eps after the correction, so eps weighs
1/sqrt(1 - beta2^t) times more in the authors' version: ~31x at step 1 with beta2 = 0.999), and it decays the weight
BEFORE the Adam update (p * (1 - lr * wd), then the update). On a 10-step tiny run (scripts/compare_with_authors.py)
torch's AdamW ends with LoRA factors 5e-2 away from the authors' (B itself is ~0.1); this class stays within 5e-7.

Why hand-written: no maintained library has this variant. transformers removed its `AdamW` in v5 (and had deprecated it
since 4.x); torch's AdamW/Adam differ as above; the formula is five tensor operations. They are done in the authors'
order with the same torch operations: on the same gradients it gives the authors' weights bit for bit (checked over
50 steps with a changing learning rate).

`adamw_torch` is torch.optim.AdamW with torch's own implementation choice (its multi-tensor `foreach` kernels on a
GPU): faster for models with many trained tensors (full fine-tuning), numerically a slightly different optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch


class PaperAdamW(torch.optim.Optimizer):
    """The authors' AdamW (see the module docstring). State per parameter: `step` (a Python int, so beta^t is computed
    in double precision as in the authors' code), `exp_avg` and `exp_avg_sq` (float32 tensors shaped like the
    parameter). A parameter stored in lower precision is updated in float32 and written back."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        correct_bias: bool = True,
    ):
        if lr < 0.0:
            raise ValueError(f"invalid learning rate {lr}: must be >= 0")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas}: each must be in [0, 1)")
        if eps < 0.0:
            raise ValueError(f"invalid eps {eps}: must be >= 0")
        if weight_decay < 0.0:
            raise ValueError(f"invalid weight_decay {weight_decay}: must be >= 0")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, correct_bias=correct_bias)
        super().__init__(params, defaults)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for state in self.state.values():  # a checkpoint format may hand the step back as a 0-d tensor
            if isinstance(state.get("step"), torch.Tensor):
                state["step"] = int(state["step"].item())

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("PaperAdamW does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
                param = p if p.dtype == torch.float32 else p.float()
                grad = p.grad if p.grad.dtype == torch.float32 else p.grad.float()
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                step = state["step"]

                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                step_size = group["lr"]
                if group["correct_bias"]:
                    step_size = step_size * math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step)
                param.addcdiv_(exp_avg, denom, value=-step_size)
                if group["weight_decay"] > 0.0:
                    param.add_(param, alpha=-group["lr"] * group["weight_decay"])
                if param is not p:
                    p.copy_(param)
        return loss


def _paper_adamw(params, training) -> torch.optim.Optimizer:
    return PaperAdamW(
        params, lr=training.learning_rate, betas=tuple(training.adam_betas), eps=training.adam_epsilon,
        weight_decay=training.weight_decay, correct_bias=True,
    )


def _torch_adamw(params, training) -> torch.optim.Optimizer:
    # foreach/fused left to torch's defaults: it picks the multi-tensor (foreach) kernels on a GPU.
    return torch.optim.AdamW(
        params, lr=training.learning_rate, betas=tuple(training.adam_betas), eps=training.adam_epsilon,
        weight_decay=training.weight_decay,
    )


# The names `training.optimizer` accepts. config.py spells the same names in its Literal (it must not import torch);
# tests/test_optim.py checks that the two agree.
OPTIMIZERS: dict[str, Callable[[Any, Any], torch.optim.Optimizer]] = {
    "adamw_paper": _paper_adamw,
    "adamw_torch": _torch_adamw,
}


def build_optimizer(params, training) -> torch.optim.Optimizer:
    """The optimizer `training.optimizer` names (a TrainingConfig), over `params`, one group: weight decay applies to
    every trained tensor, as in the authors' E2E run (no --no_decay_bias)."""
    if training.optimizer not in OPTIMIZERS:  # the config already refuses unknown names; this guards direct callers
        raise ValueError(f"unknown optimizer {training.optimizer!r} (known: {', '.join(OPTIMIZERS)})")
    return OPTIMIZERS[training.optimizer](params, training)


def describe_optimizer(training) -> dict[str, Any]:
    """What results.json records about the optimizer: its name, class and hyper-parameters."""
    cls = PaperAdamW if training.optimizer == "adamw_paper" else torch.optim.AdamW
    record = {
        "name": training.optimizer,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "lr": training.learning_rate,
        "betas": list(training.adam_betas),
        "eps": training.adam_epsilon,
        "weight_decay": training.weight_decay,
        "weight_decay_applies_to": "every trained tensor",
    }
    if training.optimizer == "adamw_paper":
        record["bias_correction"] = "step size lr*sqrt(1-beta2^t)/(1-beta1^t); eps added to sqrt(v) before it"
        record["weight_decay_order"] = "after the Adam update, on the updated weight"
    else:
        record["bias_correction"] = "torch: v corrected before adding eps"
        record["weight_decay_order"] = "torch: before the Adam update"
    return record


def warmup_steps(t, train_set) -> int:
    """training.warmup_steps, or training.warmup_tokens (the paper's GPT-3 recipe: 250,000) as steps, with the tokens
    per step estimated from this data set's mean example length (`t` is the TrainingConfig)."""
    if t.warmup_tokens is None:
        return t.warmup_steps
    mean_length = sum(len(example["input_ids"]) for example in train_set) / max(len(train_set), 1)
    return math.ceil(t.warmup_tokens / (t.batch_size * t.gradient_accumulation_steps * mean_length))
