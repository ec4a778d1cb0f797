"""LoRA exactly as the paper (and the authors' `loralib.MergedLinear`) defines it.

h = W0 x + (alpha / r) * B A x, with a separate (A, B) for every adapted weight, including the q and v *slices* of a
fused q|k|v projection (GPT-2's `c_attn`, GPT-NeoX's per-head `query_key_value`), k left untouched.

Hand-written rather than peft's LoRA because peft, given `target_modules=["c_attn"]`, learns ONE update shared by q, k
and v: the same parameter count but a different model from the paper's. `lora_ft export` still writes a peft adapter
that reproduces this model exactly (see `lora_ft/export.py`).

Speed: all enabled slices of one projection share one matmul with the stacked A (n*r x in) and one batched matmul with
the stacked B (n x d x r); the scatter into the fused output is a single `index_add`.
"""

from __future__ import annotations

import json
import logging
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..models import Architecture
from .base import Method, freeze
from .configs import LoraConfig

logger = logging.getLogger(__name__)


class LoraLayer(nn.Module):
    """A frozen Linear or Conv1D plus one low-rank update per enabled output slice.

    Parameters: `lora_A` (n*r, in) stacks the n slices' A; `lora_B` (n, d, r) stacks their B, where d is a slice's width.
    `out_index` lists, slice after slice, the output features each update lands on (None: the whole output, n = 1).
    Slices of different widths (q and v of Phi-3's qkv_proj under grouped-query attention: `slice_width` a list) keep
    their B one after the other in `lora_B` (d_1 + ... + d_n, r) and multiply as one block-diagonal matrix.
    """

    def __init__(
        self,
        base_layer: nn.Module,
        slice_names: list[str],
        out_index: torch.Tensor | None,
        slice_width: int | list[int],
        rank: int,
        alpha: float,
        dropout: float,
        init_a: str,
    ):
        super().__init__()
        self.base_layer = base_layer
        self.is_conv1d = isinstance(base_layer, Conv1D)  # Conv1D stores its weight as (in, out)
        weight = base_layer.weight
        self.in_features = weight.shape[0] if self.is_conv1d else weight.shape[1]
        self.slice_names = list(slice_names)
        n = len(slice_names)
        self.rank = rank
        self.scaling = alpha / rank
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        factory = {"device": weight.device, "dtype": weight.dtype}
        widths = [slice_width] * n if isinstance(slice_width, int) else list(slice_width)
        self.slice_widths = widths if len(set(widths)) > 1 else None  # None: B stacked (n, d, r)
        self.lora_A = nn.Parameter(torch.empty(n * rank, self.in_features, **factory))
        b_shape = (sum(widths), rank) if self.slice_widths else (n, widths[0], rank)
        self.lora_B = nn.Parameter(torch.zeros(*b_shape, **factory))  # B = 0: training starts at W0
        if out_index is None:
            self.out_index = None
        else:
            self.register_buffer("out_index", out_index.to(weight.device), persistent=False)
        self.merged = False
        self.reset_lora_a(init_a)

    def reset_lora_a(self, init_a: str) -> None:
        if init_a == "gaussian":
            nn.init.normal_(self.lora_A, mean=0.0, std=0.02)
        else:  # loralib's current init: fan_in is the input width for every stacked slice alike
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.merged:
            return result
        after_a = F.linear(self.lora_dropout(x), self.lora_A)  # (..., n*r): every slice's A in one matmul
        if self.out_index is None:
            return result + F.linear(after_a, self.lora_B[0]) * self.scaling
        if self.slice_widths:  # slices of different widths: one block-diagonal B (zeros off the blocks add nothing)
            delta = F.linear(after_a, torch.block_diag(*self.lora_B.split(self.slice_widths))) * self.scaling
            return result.index_add(-1, self.out_index, delta.to(result.dtype))
        n, width, r = self.lora_B.shape
        delta = torch.einsum("...nr,ndr->...nd", after_a.unflatten(-1, (n, r)), self.lora_B) * self.scaling
        return result.index_add(-1, self.out_index, delta.flatten(-2).to(result.dtype))

    @torch.no_grad()
    def delta_weight(self) -> torch.Tensor:
        """(alpha/r) B A for every slice, placed in a (out, in) matrix."""
        if self.slice_widths:
            per_slice = torch.block_diag(*self.lora_B.split(self.slice_widths)) @ self.lora_A * self.scaling
        else:
            n, width, r = self.lora_B.shape
            per_slice = torch.bmm(self.lora_B, self.lora_A.view(n, r, self.in_features)) * self.scaling
            if self.out_index is None:
                return per_slice[0]
        out_features = self.base_layer.weight.shape[1 if self.is_conv1d else 0]
        delta = per_slice.new_zeros(out_features, self.in_features)
        delta[self.out_index] = per_slice.reshape(-1, self.in_features)
        return delta

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged:
            return
        delta = self.delta_weight()
        self.base_layer.weight += delta.T if self.is_conv1d else delta
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        delta = self.delta_weight()
        self.base_layer.weight -= delta.T if self.is_conv1d else delta
        self.merged = False

    def factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per slice name: (A (r x in), B (d x r)), unscaled."""
        r = self.rank
        bs = self.lora_B.split(self.slice_widths) if self.slice_widths else self.lora_B
        return {
            name: (self.lora_A[i * r : (i + 1) * r].detach(), bs[i].detach())
            for i, name in enumerate(self.slice_names)
        }

    def slice_rows(self) -> list[torch.Tensor]:
        """The output features of each slice, in order (an unfused layer: every one)."""
        if self.out_index is None:
            return [torch.arange(self.lora_B.shape[1])]
        widths = self.slice_widths or [self.lora_B.shape[1]] * self.lora_B.shape[0]
        return list(self.out_index.split(widths))

    def extra_repr(self) -> str:
        return f"slices={self.slice_names}, rank={self.rank}, scaling={self.scaling:g}, merged={self.merged}"


class LoRA(Method):
    name = "lora"
    label = "LoRA"
    Config = LoraConfig
    mergeable = True

    def apply(self, model: nn.Module, arch: Architecture) -> None:
        freeze(model)
        groups = self.config.plan(arch)
        num_heads, num_kv_heads = arch.num_heads(model.config), arch.num_kv_heads(model.config)
        blocks = arch.block_list(model)
        layers = self.config.layers if self.config.layers is not None else range(len(blocks))
        too_wide = []  # (rank key, rank, weight name, d, k) of every update whose rank exceeds min(d, k)
        for i in layers:
            block = blocks[i]
            for module_path, names in groups.items():
                base = block.get_submodule(module_path)
                out_features = base.weight.shape[1] if isinstance(base, Conv1D) else base.weight.shape[0]
                in_features = base.weight.shape[0] if isinstance(base, Conv1D) else base.weight.shape[1]
                locations = [arch.weights[name] for name in names]
                if locations[0].fused is None:
                    out_index, width = None, out_features
                else:
                    indices = [loc.output_index(out_features, num_heads, num_kv_heads) for loc in locations]
                    width, out_index = [len(i) for i in indices], torch.cat(indices)
                rank = self.config.rank_of(names[0])
                for n, d in zip(names, width if isinstance(width, list) else [width] * len(names)):
                    if rank > min(d, in_features):
                        key = f"method.rank_per_target.{n}" if n in self.config.rank_per_target else "method.rank"
                        too_wide.append((key, rank, f"{arch.blocks}.{i}.{module_path}:{n}", d, in_features))
                layer = LoraLayer(
                    base,
                    names,
                    out_index,
                    width,
                    rank=rank,
                    alpha=self.config.alpha,
                    dropout=self.config.dropout,
                    init_a=self.config.init_a,
                )
                block.set_submodule(module_path, layer)
        if too_wide:  # allowed (the paper's Table 6 sweeps r), but B A cannot have a rank above min(d, k)
            key, rank, name, d, k = too_wide[0]
            more = f" (and {len(too_wide) - 1} more adapted weights)" if len(too_wide) > 1 else ""
            logger.warning(
                "%s %d is more than min(d, k) = %d of the %d x %d weight %s%s: a rank above the weight's smaller side "
                "adds parameters but no update that r = %d could not express", key, rank, min(d, k), d, k, name, more,
                min(d, k),
            )

    def size_label(self) -> str:
        return f"r={self.config.rank}"

    def checkpoint_metadata(self, model: nn.Module) -> dict[str, str]:
        """The slice names of every adapted module: a reader needs them to split the stacked A and B per weight (and
        the widths of slices that differ, whose B lie one after the other)."""
        layers = lora_layers(model)
        widths = {name: layer.slice_widths for name, layer in layers.items() if layer.slice_widths}
        return {SLICES_METADATA_KEY: json.dumps({name: layer.slice_names for name, layer in layers.items()}),
                **({WIDTHS_METADATA_KEY: json.dumps(widths)} if widths else {})}

    def merge(self, model: nn.Module) -> None:
        for layer in lora_layers(model).values():
            layer.merge()

    def unmerge(self, model: nn.Module) -> None:
        for layer in lora_layers(model).values():
            layer.unmerge()


def lora_layers(model: nn.Module) -> dict[str, LoraLayer]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def unwrap_lora(model: nn.Module) -> None:
    """Replace every (merged) LoraLayer by its base layer: the plain transformers model remains."""
    for name, layer in lora_layers(model).items():
        if not layer.merged:
            raise RuntimeError(f"{name} is not merged; merge before unwrapping or the update is lost")
        model.set_submodule(name, layer.base_layer)


def lora_factors(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every adapted weight's (A, B), keyed "<module>:<weight>", e.g. "transformer.h.0.attn.c_attn:q"."""
    factors = {}
    for module_name, layer in lora_layers(model).items():
        for slice_name, ab in layer.factors().items():
            factors[f"{module_name}:{slice_name}"] = ab
    return factors


SLICES_METADATA_KEY = "lora_slices"
WIDTHS_METADATA_KEY = "lora_slice_widths"


# Read by lora_ft.checkpoint.load_lora_factors; methods never import checkpoint code (it is the layer above them).
def factors_from_state_dict(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    slices = json.loads(metadata[SLICES_METADATA_KEY])
    widths = json.loads(metadata.get(WIDTHS_METADATA_KEY, "{}"))
    factors = {}
    for module_name, names in slices.items():
        a, b = tensors[f"{module_name}.lora_A"], tensors[f"{module_name}.lora_B"]
        r = b.shape[-1]
        bs = b.split(widths[module_name]) if module_name in widths else b
        for i, name in enumerate(names):
            factors[f"{module_name}:{name}"] = (a[i * r : (i + 1) * r], bs[i])
    return factors
