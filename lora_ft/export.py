"""Exporting a trained model for use without lora-ft.

- `export_peft`: a LoRA run as a peft adapter (`adapter_config.json` + `adapter_model.safetensors`) that
  `peft.PeftModel.from_pretrained(base_model, out_dir)` loads and that computes exactly our model.
- `export_merged`: LoRA merged into the base weights (or BitFit / FT / FT^Top as they are) as a plain transformers model
  that `AutoModelForCausalLM.from_pretrained(out_dir)` loads with no lora-ft installed.

Separate q and v updates on a fused projection (GPT-2 `c_attn`, GPT-NeoX `query_key_value`) become ONE peft LoRA of rank
n*r on that projection: A' = [A_1; ...; A_n] (n*r x in) and B' (out x n*r) holding B_i in slice i's output rows and
columns i*r..(i+1)*r, zeros elsewhere, so B'A' = the slices' updates side by side, the other slices (k) untouched.
alpha' = n*alpha keeps peft's scaling alpha'/r' equal to ours, alpha/r. peft's own `target_modules=["c_attn"]` would
instead learn one update shared by q, k and v.

Neither export modifies the model it is given: both work on a copy of the module tree that shares the weights (only the
weights a merge changes are copied).
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from .methods.base import Method
from .methods.lora import LoraLayer, lora_layers, unwrap_lora
from .models import Architecture
from .atomic import disk_full_is_user_error, honour_umask
from .errors import UserError
from .run_lock import LOCK_FILENAME, RunLock


class ExportError(UserError, ValueError):
    """The model cannot be exported this way; the message says why and what to do instead."""


def _prepare_dir(out_dir: str | Path, overwrite: bool) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"export target {out} exists and is not a directory")
    if out.is_dir() and any(p.name != LOCK_FILENAME for p in out.iterdir()) and not overwrite:
        raise ExportError(f"export target {out} is not empty; choose another directory or pass overwrite=True (--overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _honour_umask_in(out: Path) -> None:
    """save_pretrained writes its weights through safetensors, which makes them 0o600 whatever the umask."""
    for path in out.iterdir():
        if path.is_file() and path.name != LOCK_FILENAME:
            honour_umask(path)


def _shared_copy(model: nn.Module, own: set[int] = frozenset()) -> nn.Module:
    """A copy of the module tree sharing every parameter with `model`, except those whose id is in `own` (copied).

    Sharing through deepcopy's memo costs no weight memory, so exporting a large model does not double it.
    """
    memo = {id(p): p for p in model.parameters() if id(p) not in own}
    return copy.deepcopy(model, memo)


def _check_plain(model: nn.Module) -> None:
    """Guard: nothing of lora-ft may remain in a model that plain transformers must load."""
    leftovers = sorted({type(m).__name__ for m in model.modules() if type(m).__module__.startswith("lora_ft.")})
    if leftovers:
        raise ExportError(f"the model still holds lora-ft modules ({', '.join(leftovers)}); it cannot be saved as plain transformers")


# ---------------------------------------------------------------------------------------------------------------- peft


def _peft_factors(layer: LoraLayer) -> tuple[torch.Tensor, torch.Tensor]:
    """(A', B') in peft's layout: A' (n*r x in), B' (out x n*r) with slice i's B in its output rows, columns i*r.."""
    n, width, r = layer.lora_B.shape
    a = layer.lora_A.detach()
    if layer.out_index is None:
        return a, layer.lora_B[0].detach()
    out_features = layer.base_layer.weight.shape[1 if layer.is_conv1d else 0]
    b = layer.lora_B.new_zeros(out_features, n * r)
    for i in range(n):
        rows = layer.out_index[i * width : (i + 1) * width]
        b[rows, i * r : (i + 1) * r] = layer.lora_B[i].detach()
    return a, b


def peft_lora_config(model: nn.Module, method: Method):
    """The `peft.LoraConfig` equivalent to this model's LoRA layers (targets named by full module path)."""
    from peft import LoraConfig as PeftLoraConfig

    layers = lora_layers(model)
    # Per module: rank' = n*r and alpha' = n*alpha, n = slices sharing the module (scaling alpha'/r' = alpha/r).
    shapes = {
        name: (len(layer.slice_names) * layer.rank, len(layer.slice_names) * method.config.alpha)
        for name, layer in layers.items()
    }
    (rank, alpha), _ = Counter(shapes.values()).most_common(1)[0]  # the common case is the default, the rest patterns
    # Patterns are regexes matched against the module path's end: escape the path so it matches that module alone.
    rank_pattern = {re.escape(name): int(r) for name, (r, _) in shapes.items() if r != rank}
    alpha_pattern = {re.escape(name): _number(a) for name, (_, a) in shapes.items() if a != alpha}
    conv1d = {layer.is_conv1d for layer in layers.values()}
    if len(conv1d) > 1:  # peft keeps one fan_in_fan_out per adapter
        raise ExportError("LoRA on both Conv1D and Linear modules cannot be written as one peft adapter")
    return PeftLoraConfig(
        r=int(rank),
        lora_alpha=_number(alpha),
        lora_dropout=float(method.config.dropout),
        target_modules=sorted(layers),
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        fan_in_fan_out=conv1d.pop(),  # GPT-2's Conv1D stores its weight (in, out)
        bias="none",
        init_lora_weights=True,  # overwritten below; True avoids peft's costlier inits
    )


def _number(x: float) -> int | float:
    """32.0 -> 32: peft's config declares lora_alpha an int; keep a fractional alpha as it is."""
    return int(x) if float(x).is_integer() else float(x)


def export_peft(model: nn.Module, method: Method, arch: Architecture, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write the LoRA layers of `model` as a peft adapter in `out_dir`; returns the directory.

    Load it with `peft.PeftModel.from_pretrained(base_model, out_dir)` on the same base model; the result computes
    the same logits as `model`. Only LoRA can be exported this way (other methods: `export_merged`, where possible).
    """
    from peft import get_peft_model

    layers = lora_layers(model)
    if method.name != "lora" or not layers:
        raise ExportError(
            f"peft export is for LoRA; this model was adapted with {method.name!r}. "
            "BitFit and FT can be exported with export_merged (lora-ft export --format merged)."
        )
    merged = [name for name, layer in layers.items() if layer.merged]
    if merged:
        raise ExportError(f"LoRA is merged into the base weights ({merged[0]}, ...); call method.unmerge(model) before a peft export")
    out = _prepare_dir(out_dir, overwrite)
    config = peft_lora_config(model, method)

    flags = {id(p): p.requires_grad for p in model.parameters()}  # peft freezes the (shared) base weights: restore after
    try:
        base = _shared_copy(model)
        for name, layer in lora_layers(base).items():
            base.set_submodule(name, layer.base_layer)
        peft_model = get_peft_model(base, config)
        with torch.no_grad():
            for name, layer in layers.items():
                target = peft_model.base_model.model.get_submodule(name)
                a, b = _peft_factors(layer)
                lora_a, lora_b = target.lora_A["default"].weight, target.lora_B["default"].weight
                if lora_a.shape != a.shape or lora_b.shape != b.shape:  # a bug here, not the user's
                    raise RuntimeError(f"{name}: peft expects A {tuple(lora_a.shape)}, B {tuple(lora_b.shape)}; got {tuple(a.shape)}, {tuple(b.shape)}")
                lora_a.copy_(a)
                lora_b.copy_(b)
        peft_model.save_pretrained(str(out))
        _honour_umask_in(out)
    finally:
        for p in model.parameters():
            p.requires_grad_(flags[id(p)])
    return out


# -------------------------------------------------------------------------------------------------------------- merged


def export_merged(
    model: nn.Module, method: Method, arch: Architecture, tokenizer, out_dir: str | Path, *, overwrite: bool = False
) -> Path:
    """Save `model` with its training folded into the base weights, as a plain transformers model (+ tokenizer).

    LoRA is merged (W = W0 + alpha/r B A) and its wrappers removed; BitFit, FT and FT^Top are saved as they are.
    Adapters and prefix methods add computation to the model and cannot be merged: they raise ExportError.
    """
    if not method.mergeable:
        raise ExportError(
            f"{method.label} cannot be merged into the base weights: it adds computation to the model "
            "(adapter layers or virtual tokens). Save the run's trained weights instead (its run directory)."
        )
    layers = lora_layers(model)
    if layers:
        # Copy only the weights the merge changes; merge there and drop the wrappers. `model` stays as it was.
        plain = _shared_copy(model, own={id(layer.base_layer.weight) for layer in layers.values()})
        for layer in lora_layers(plain).values():
            layer.merge()
        unwrap_lora(plain)
    else:
        plain = model
    _check_plain(plain)
    out = _prepare_dir(out_dir, overwrite)
    plain.save_pretrained(str(out))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    _honour_umask_in(out)
    return out


# ------------------------------------------------------------------------------------------------------------ run dir


def export_run(run_dir: str | Path, out_dir: str | Path, *, fmt: str = "peft", overwrite: bool = False) -> Path:
    """`lora-ft export`: rebuild a finished run's model (its config.yaml, base weights, trained.safetensors) and export it.

    fmt "peft": a peft LoRA adapter for the run's base model; "merged": a plain transformers model with its tokenizer.
    """
    from .build import adapted_model
    from .checkpoint import load_trained
    from .config import load_config
    from .divergence import check_finite_weights
    from .models.loading import load_tokenizer
    from .run_dir import CONFIG_FILE

    if fmt not in ("peft", "merged"):
        raise ExportError(f"unknown export format {fmt!r}: choose 'peft' (LoRA adapter) or 'merged' (plain transformers model)")
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise ExportError(f"{run_dir} has no {CONFIG_FILE}: is it a lora-ft run directory?")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ExportError(f"export target {out_dir} exists and is not a directory")
    # One writer per output folder: a second export into it is refused (and leaves it alone) while this one writes.
    with RunLock(out_dir, command=f"lora-ft export --run {run_dir} --out {out_dir} --format {fmt}"):
        check_finite_weights(run_dir)  # never ship a diverged (NaN) model
        _prepare_dir(out_dir, overwrite)  # fail before loading any weights
        cfg = load_config(run_dir / CONFIG_FILE)
        built = adapted_model(cfg)
        load_trained(built.model, run_dir)
        built.model.eval()
        with disk_full_is_user_error(out_dir):
            if fmt == "peft":
                return export_peft(built.model, built.method, built.arch, out_dir, overwrite=True)
            tokenizer = load_tokenizer(cfg.model)
            return export_merged(built.model, built.method, built.arch, tokenizer, out_dir, overwrite=True)
