"""Divergence: a training run whose loss, gradient or weights stop being finite numbers.

Training notes each step's loss and gradient norm on the device (`NonFiniteWatch.observe`, no host sync) and looks at
the result only at the points where it syncs anyway (a logging step, a checkpoint, the end): a diverged run stops within
`training.log_every_steps` steps of its first bad one, the message names that step, and nothing non-finite is ever
saved, because every save is preceded by a check of every step since the last one and of the weights themselves.

`eval` and `export` refuse trained weights that are not finite (`check_finite_weights`) before loading any model: a
NaN model decodes to garbage ("!!!!!!") that would otherwise be scored or shipped as if it were a result.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import UserError


class TrainingDivergedError(UserError):
    """The loss, a gradient or the weights became NaN or infinite; the message names the step and what to change."""


class NonFiniteWeightsError(UserError):
    """Saved trained weights hold NaN or infinite values (a diverged run): they are refused, not scored or exported."""


def diverged_advice(learning_rate: float) -> str:
    return (
        f"Lower training.learning_rate (now {learning_rate:g}) or set training.max_grad_norm (e.g. 1.0), "
        "then train again into a new output.dir (or with output.overwrite=true)"
    )


class NonFiniteWatch:
    """The first optimizer step whose loss or gradient norm was not finite, kept on the device.

    `observe` is a few tiny device ops and no host sync; `first_bad_step` syncs once (call it where the loop syncs
    anyway). Once set, a step number is never overwritten: the message names the FIRST bad step.
    """

    def __init__(self, device: torch.device):
        self._first = torch.zeros(2, dtype=torch.long, device=device)  # [loss, gradient]: 0 = all finite so far

    def observe(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor | None = None) -> None:
        bad_grad = torch.zeros((), dtype=torch.bool, device=self._first.device)
        if grad_norm is not None:
            bad_grad = ~torch.isfinite(grad_norm.detach().to(self._first.device))
        bad = torch.stack([~torch.isfinite(loss.detach().to(self._first.device)), bad_grad])
        self._first = torch.where(bad & (self._first == 0), torch.full_like(self._first, step), self._first)

    def first_bad_step(self) -> tuple[int, str] | None:
        """(step, "loss" | "gradient norm") of the first non-finite value seen, or None: one host sync."""
        loss_step, grad_step = self._first.tolist()
        found = [(s, what) for s, what in ((loss_step, "loss"), (grad_step, "gradient norm")) if s]
        return min(found, key=lambda bad: bad[0]) if found else None  # on a tie, the loss (computed first)

    def raise_if_diverged(self, step: int, last_checkpoint_step: int | None, learning_rate: float) -> None:
        """TrainingDivergedError naming the first bad step, if there was one (one host sync)."""
        bad = self.first_bad_step()
        if bad is None:
            return
        kept = (
            f"the last checkpoint, step {last_checkpoint_step}, is finite and kept" if last_checkpoint_step is not None
            else "no checkpoint had been written"
        )
        raise TrainingDivergedError(
            f"training diverged: the {bad[1]} was not finite (NaN or inf) at step {bad[0]}; stopped at step {step} "
            f"without saving its weights ({kept}). {diverged_advice(learning_rate)}"
        )


def gradient_norm(parameters) -> torch.Tensor:
    """Total L2 norm of the gradients, on the device (fused kernels, no sync). A norm that overflows float32 (> 1e19)
    reads as infinite, which is divergence too."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6: fused (foreach) kernels
        return torch.nn.utils.get_total_norm(grads, error_if_nonfinite=False)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def all_finite(tensors) -> bool:
    """Whether every value of every tensor is finite: one host sync however many tensors. Of a sharded (FSDP) tensor
    only this process's shard is looked at."""
    flags = [torch.isfinite(t.to_local() if hasattr(t, "to_local") else t).all() for t in tensors]
    return bool(torch.stack(flags).all()) if flags else True


def check_trained_weights_finite(model: torch.nn.Module, step: int, learning_rate: float, agree=None) -> None:
    """Finite losses and gradients can still step into non-finite weights (an overflowing update): look at the trained
    weights themselves before they are saved. One sync, at save time only. `agree`: under FSDP, where each process
    sees its own shards, makes every process's verdict the same (a collective)."""
    finite = all_finite(p.detach() for p in model.parameters() if p.requires_grad)
    if not (agree(finite) if agree else finite):
        raise TrainingDivergedError(
            f"training diverged: the trained weights were not finite (NaN or inf) after step {step}, though every loss "
            f"and gradient norm was; nothing from that step was saved. {diverged_advice(learning_rate)}"
        )


def non_finite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an infinity."""
    return [
        name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]


def check_finite_weights(directory: Path) -> None:
    """Refuse (NonFiniteWeightsError) the trained weights saved in `directory` if any value is NaN or infinite."""
    from .checkpoint import TRAINED_FILE, read_trained

    tensors, _ = read_trained(directory)
    bad = non_finite_tensors(tensors)
    if bad:
        raise NonFiniteWeightsError(
            f"{Path(directory) / TRAINED_FILE} holds non-finite values (NaN or inf) in {len(bad)} of {len(tensors)} "
            f"trained tensors (e.g. {bad[0]}): the run diverged, so these weights are not a model. "
            "Use an earlier epoch's checkpoint (--epochs N) or train again with a lower training.learning_rate"
        )
