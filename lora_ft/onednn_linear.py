"""Decoding on the CPU with the model's linear layers on oneDNN's prepacked weights.

PyTorch's CPU `linear` calls MKL's sgemm on the weight as stored; for the shapes of beam-search decoding (about 160
rows against a 576 x 1536 or 576 x 49152 weight) it ran at a third of this machine's peak, where oneDNN with the weight
reordered once into its blocked layout ran 2-3x faster (scripts/bench_decoding.py reports both). That is what
torch.compile's CPU backend does (`torch.ops.mkldnn._linear_pointwise` on a `_reorder_linear_weight`), but compiling
for every row count a beam search passes through costs more than it saves, and no library offers the eager form; so
`prepacked_linears` swaps it in by hand, for the duration of one decoding, and only where it is checked to compute the
same product (float32 weights on the CPU; within float rounding of `F.linear`).

The packed weights are a copy of the model's linear weights (as much memory again as those weights) made when the
decoding starts, so they hold the weights as they are then (LoRA merged); training never sees them.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

@contextlib.contextmanager
def prepacked_linears(model: nn.Module) -> Iterator[int]:
    """Inside the block, the model's float32 CPU `nn.Linear` and transformers `Conv1D` layers multiply with oneDNN on
    prepacked weights; yields how many layers were switched (0 where oneDNN is not available or not exact here).

    Layers of other types (wrappers such as LoRA's compute through their plain base layer), other dtypes or devices,
    and layers whose `forward` was already replaced on the instance (accelerate's offloading hooks) are left alone.
    """
    switched: list[nn.Module] = []
    try:
        if supported():
            from transformers.pytorch_utils import Conv1D

            for module in model.modules():
                weight = _weight_out_in(module, Conv1D)
                if weight is None or "forward" in vars(module):
                    continue
                module.forward = _PrepackedLinear(weight, module.bias)
                switched.append(module)
        yield len(switched)
    finally:
        for module in switched:
            del module.forward


@functools.cache
def supported() -> bool:
    """Whether this torch has oneDNN's packed linear and it computes F.linear's product here (checked once)."""
    return _check()


class _PrepackedLinear:
    """`F.linear(x, weight, bias)` with the weight reordered once into oneDNN's layout."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)
        self.bias = None if bias is None else bias.detach()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed, self.bias, "none", [], "")


def _weight_out_in(module: nn.Module, conv1d: type) -> torch.Tensor | None:
    """The (out, in) float32 CPU weight of a plain Linear or transformers Conv1D (`conv1d`, stored (in, out)); None
    for anything else."""
    if type(module) is nn.Linear:
        weight = module.weight
    elif type(module) is conv1d:
        weight = module.weight.t().contiguous()
    else:
        return None
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        return None
    return weight


def _check() -> bool:
    """oneDNN's packed linear is there and equals F.linear to float rounding on a small case, with and without bias."""
    mkldnn = getattr(torch.ops, "mkldnn", None)
    if not torch.backends.mkldnn.is_available() or mkldnn is None:
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(3, 5, 48, generator=generator)
        weight = torch.randn(40, 48, generator=generator)
        bias = torch.randn(40, generator=generator)
        with torch.inference_mode():
            return all(torch.allclose(_PrepackedLinear(weight, b)(x), F.linear(x, weight, b), rtol=1e-4, atol=1e-4)
                       for b in (None, bias))
    except (RuntimeError, AttributeError, NotImplementedError):  # a torch built without these ops
        return False
