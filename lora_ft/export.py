"""Exporting a trained model for use elsewhere, in three formats (`FORMATS`; `formats_for` says which fit a method):

- "peft" (`export_peft`): a LoRA run as a peft adapter (`adapter_config.json` + `adapter_model.safetensors`, task type
  CAUSAL_LM, the base named as the config names it) that `AutoPeftModelForCausalLM.from_pretrained(out_dir)` or
  `PeftModel.from_pretrained(base_model, out_dir)` loads and that computes exactly our model.
- "merged" (`export_merged`): LoRA merged into the base weights (or BitFit / FT / FT^Top as they are) as a plain
  transformers model that `AutoModelForCausalLM.from_pretrained(out_dir)` loads with no lora-ft installed.
- "lora-ft" (`export_lora_ft`, loaded by `load_export`): the trained tensors and the run config, for every method;
  the only format for Adapter^H / Adapter^L (their layers cannot merge, and peft has no bottleneck adapters) and for
  PreLayer / PreEmbed (peft's prompt tuning has no infix, and its prefix tuning learns per-layer keys and values, not
  the paper's replaced activations: no peft config computes what they compute).

Every export also writes a model card (README.md: task, method, base, scores of the exported weights) and
`lora_ft_export.json`, the list of the files lora-ft wrote: `overwrite` replaces exactly those (an export of another
format included) and refuses a folder holding anything else. An export is written into a hidden folder inside the
target and moved into place once complete, so a failed one (a full disk) leaves the target as it was.

Separate q and v updates on a fused projection (GPT-2 `c_attn`, GPT-NeoX `query_key_value`) become ONE peft LoRA of rank
n*r on that projection: A' = [A_1; ...; A_n] (n*r x in) and B' (out x n*r) holding B_i in slice i's output rows and
columns i*r..(i+1)*r, zeros elsewhere, so B'A' = the slices' updates side by side, the other slices (k) untouched.
alpha' = n*alpha keeps peft's scaling alpha'/r' equal to ours, alpha/r. peft's own `target_modules=["c_attn"]` would
instead learn one update shared by q, k and v.

No export modifies the model it is given: peft and merged work on a copy of the module tree that shares the weights
(only the weights a merge changes are copied).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import __version__
from .methods.base import Method
from .methods.lora import LoraLayer, lora_layers, unwrap_lora
from .models import Architecture
from .atomic import disk_full_is_user_error, honour_umask
from .errors import UserError
from .model_card import model_card
from .run_lock import LOCK_FILENAME, RunLock

FORMATS = ("peft", "merged", "lora-ft")
MANIFEST_FILE = "lora_ft_export.json"  # what lora-ft wrote into the folder: the files `overwrite` may replace
CONFIG_FILE = "lora_ft_config.yaml"  # the lora-ft format's run config
_STAGING_PREFIX = ".partial-"  # an export being written, inside its target folder


class ExportError(UserError, ValueError):
    """The model cannot be exported this way; the message says why and what to do instead."""


# ------------------------------------------------------------------------------------------------------------ formats


def formats_for(method: Method) -> tuple[str, ...]:
    """The export formats that hold what `method` trained."""
    if method.name in ("lora", "peft"):  # peft: save_pretrained; merged where peft can merge the type
        return FORMATS if method.mergeable else ("peft", "lora-ft")
    if method.mergeable:  # BitFit, FT, FT^Top: the trained tensors are the model's own
        return ("merged", "lora-ft")
    return ("lora-ft",)


def check_format(method: Method, fmt: str) -> None:
    """ExportError in one line, naming the formats that exist for the method, unless `fmt` is one of them."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    formats = formats_for(method)
    if fmt in formats:
        return
    prefix = method.virtual_token_counts() != (0, 0)
    if fmt == "peft":
        if method.mergeable:
            why = "a peft adapter holds LoRA factors, and this method trains the model's own weights"
        elif method.name == "prelayer":
            why = "peft's prefix tuning learns per-layer keys and values, not replaced activations, and has no infix"
        elif method.name == "preembed":  # equal without an infix, perhaps; not checked numerically, so not claimed
            why = "peft's prompt tuning has no infix tokens, and lora-ft has not checked it against PreEmbed"
        else:
            why = "peft has no bottleneck adapters"
    else:
        why = ("its virtual tokens are inputs the base model does not have, which cannot be merged into its weights"
               if prefix else "its adapter layers add computation, which cannot be merged into the base weights")
        why = "peft cannot merge this type into the base weights" if method.name == "peft" and not prefix else why
    raise ExportError(f"{method.label} cannot be exported as '{fmt}': {why}; formats for {method.label}: "
                      f"{', '.join(formats)} (lora-ft: the trained tensors and run config, which lora-ft loads)")


# -------------------------------------------------------------------------------------------------- writing a folder


def _earlier_export(out: Path) -> list[str]:
    """The files an earlier export recorded in its manifest (plain names only: never a path out of the folder)."""
    try:
        files = json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in files if isinstance(f, str) and f == Path(f).name and f not in ("", ".", "..")]


def check_target(out_dir: str | Path, overwrite: bool) -> list[str]:
    """Refuse a target lora-ft must not write into (one line); returns the names of an earlier export to replace."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"export target {out} exists and is not a directory")
    if not out.is_dir():
        return []
    present = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILENAME and not p.name.startswith(_STAGING_PREFIX))
    if not present:
        return []
    if not overwrite:
        raise ExportError(f"export target {out} is not empty; choose another directory, or pass --overwrite to replace "
                          "the lora-ft export in it")
    ours = set(_earlier_export(out)) | {MANIFEST_FILE}
    foreign = [name for name in present if name not in ours]
    if foreign:
        more = ", ..." if len(foreign) > 3 else ""
        raise ExportError(f"export target {out} holds files its {MANIFEST_FILE} does not list as lora-ft's "
                          f"({', '.join(foreign[:3])}{more}); --overwrite replaces only what lora-ft wrote: move them "
                          "away or choose another directory")
    return present


def _write_export(
    out_dir: str | Path, overwrite: bool, fmt: str, write: Callable[[Path], None], record: dict | None = None
) -> Path:
    """`write(folder)` fills a hidden folder inside the target; once it has succeeded, the earlier export's files go
    and the new ones are moved in. A failure (a full disk: one line) removes what it wrote, so the rerun works."""
    from .results import write_json_atomic

    replaced = check_target(out_dir, overwrite)
    out = Path(out_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{_STAGING_PREFIX}*"):  # left by an export that was killed
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=out))
    try:
        with disk_full_is_user_error(out):
            write(staging)
            files = sorted(p.name for p in staging.iterdir()) + [MANIFEST_FILE]
            manifest = {"format": fmt, "files": files, "lora_ft_version": __version__, **(record or {})}
            write_json_atomic(staging / MANIFEST_FILE, manifest)
            for path in staging.iterdir():  # save_pretrained writes through safetensors: 0o600 whatever the umask
                if path.is_file():
                    honour_umask(path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):  # only if empty
                out.rmdir()
        raise
    # Renames within one folder. The new manifest lands before the files it lists, so an interrupted swap leaves
    # only files some manifest calls lora-ft's, and --overwrite can clean up.
    for name in replaced:
        path = out / name
        if name == MANIFEST_FILE:
            continue  # replaced by the new one below
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    os.replace(staging / MANIFEST_FILE, out / MANIFEST_FILE)
    for path in list(staging.iterdir()):
        os.replace(path, out / path.name)
    staging.rmdir()
    return out


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
    r, a = layer.rank, layer.lora_A.detach()
    if layer.out_index is None:
        return a, layer.lora_B[0].detach()
    out_features = layer.base_layer.weight.shape[1 if layer.is_conv1d else 0]
    b = layer.lora_B.new_zeros(out_features, len(layer.slice_names) * r)
    for i, (rows, (_, b_i)) in enumerate(zip(layer.slice_rows(), layer.factors().values())):
        b[rows, i * r : (i + 1) * r] = b_i
    return a, b


def peft_lora_config(model: nn.Module, method: Method, base_model: str | None = None):
    """The `peft.LoraConfig` equivalent to this model's LoRA layers (targets named by full module path), for a causal
    LM (so that peft's Auto classes build a PeftModelForCausalLM) on `base_model` (None: peft names the model's own
    path)."""
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
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model,
    )


def _name_base(folder: Path, base_model: str | None) -> None:
    """adapter_config.json names `base_model` (None: no name); peft's save_pretrained fills a None in from the model's
    own path, which for a random_init run is only where its architecture config came from."""
    path = folder / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), "base_model_name_or_path": base_model},
                               indent=2, sort_keys=True), encoding="utf-8")


def _number(x: float) -> int | float:
    """32.0 -> 32: peft's config declares lora_alpha an int; keep a fractional alpha as it is."""
    return int(x) if float(x).is_integer() else float(x)


def export_peft(
    model: nn.Module, method: Method, arch: Architecture, out_dir: str | Path, *, overwrite: bool = False,
    base_model: str | None = None, card=None, record: dict | None = None,
) -> Path:
    """Write the LoRA layers of `model` as a peft adapter in `out_dir`; returns the directory. `record`: more for the
    folder's manifest (a random_init run's base fingerprint, which `eval --adapter` checks).

    `base_model`: the name its adapter_config.json gives the base (what the user configured; None: peft's guess, the
    model's own path). Load it with `AutoPeftModelForCausalLM.from_pretrained(out_dir)`, or
    `peft.PeftModel.from_pretrained(base_model, out_dir)` on the same base model; either computes the same logits as
    `model`. Only LoRA can be exported this way (`check_format` names the formats of other methods).
    """
    from peft import get_peft_model

    check_format(method, "peft")
    if method.name == "peft":  # peft's own method: its own save_pretrained
        check_target(out_dir, overwrite)
        card = card or model_card(method, "peft", base_model)
        return _write_export(out_dir, overwrite, "peft", lambda folder: (
            method.save_adapter(str(folder), base_model), _name_base(folder, base_model), card.save(folder / "README.md")),
            record)
    layers = lora_layers(model)
    if not layers:
        raise ExportError("the model holds no LoRA layers: apply the LoRA method before a peft export")
    merged = [name for name, layer in layers.items() if layer.merged]
    if merged:
        raise ExportError(f"LoRA is merged into the base weights ({merged[0]}, ...); call method.unmerge(model) before a peft export")
    check_target(out_dir, overwrite)
    config = peft_lora_config(model, method, base_model)
    card = card or model_card(method, "peft", base_model)

    def write(folder: Path) -> None:
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
            peft_model.save_pretrained(str(folder))
            _name_base(folder, base_model)
        finally:
            for p in model.parameters():
                p.requires_grad_(flags[id(p)])
        card.save(folder / "README.md")  # replaces peft's, whose base_model is the model's own (cache) path

    return _write_export(out_dir, overwrite, "peft", write, record)


# -------------------------------------------------------------------------------------------------------------- merged


def export_merged(
    model: nn.Module, method: Method, arch: Architecture, tokenizer, out_dir: str | Path, *, overwrite: bool = False,
    base_model: str | None = None, card=None,
) -> Path:
    """Save `model` with its training folded into the base weights, as a plain transformers model (+ tokenizer).

    LoRA is merged (W = W0 + alpha/r B A) and its wrappers removed; BitFit, FT and FT^Top are saved as they are.
    Adapters and prefix methods add computation to the model and cannot be merged: they raise ExportError.
    """
    check_format(method, "merged")
    check_target(out_dir, overwrite)
    layers = lora_layers(model)
    if method.name == "peft":
        plain = method.merged_copy()  # merge_and_unload on a copy
    elif layers:
        # Copy only the weights the merge changes; merge there and drop the wrappers. `model` stays as it was.
        plain = _shared_copy(model, own={id(layer.base_layer.weight) for layer in layers.values()})
        for layer in lora_layers(plain).values():
            layer.merge()
        unwrap_lora(plain)
    else:
        plain = model
    _check_plain(plain)
    card = card or model_card(method, "merged", base_model)

    def write(folder: Path) -> None:
        plain.save_pretrained(str(folder))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(folder))
        card.save(folder / "README.md")

    return _write_export(out_dir, overwrite, "merged", write)


# ------------------------------------------------------------------------------------------------------------ lora-ft


def export_lora_ft(model: nn.Module, method: Method, cfg, out_dir: str | Path, *, overwrite: bool = False, card=None) -> Path:
    """Write what `method` trained (trained.safetensors) and the run config `cfg`: every method's format, loaded by
    `load_export` with lora-ft installed. A random_init base is recorded by its fingerprint, so that the loader
    refuses a base drawn differently."""
    from .build import RANDOM_BASE_KEY, random_base_fingerprint
    from .checkpoint import save_trained

    check_format(method, "lora-ft")
    check_target(out_dir, overwrite)
    record = {RANDOM_BASE_KEY: random_base_fingerprint(model)} if cfg.model.random_init else {}
    card = card or model_card(method, "lora-ft", None if cfg.model.random_init else cfg.model.name_or_path, cfg)

    def write(folder: Path) -> None:
        save_trained(model, method, folder)
        (folder / CONFIG_FILE).write_text(cfg.to_yaml(), encoding="utf-8")
        card.save(folder / "README.md")

    return _write_export(out_dir, overwrite, "lora-ft", write, record)


def load_export(folder: str | Path):
    """The model of a lora-ft format export, as the run trained it, in eval mode: an AdaptedModel (.model, .method,
    .arch). The base model comes from where the config names it (model.name_or_path), or is drawn again from
    training.seed for a random_init run."""
    from .build import RANDOM_BASE_KEY, rebuilt_model
    from .checkpoint import load_trained
    from .config import load_config

    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"{folder} is not a lora-ft export: its {MANIFEST_FILE} cannot be read ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "lora-ft":
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        raise ExportError(f"{folder} holds a '{fmt}' export, not the lora-ft format: load it with peft or transformers")
    cfg = load_config(folder / CONFIG_FILE)
    adapted = rebuilt_model(cfg, trained_in=folder, recorded=manifest.get(RANDOM_BASE_KEY))
    load_trained(adapted.model, folder)
    adapted.model.eval()
    return adapted


# ------------------------------------------------------------------------------------------------------------ run dir


def export_run(run_dir: str | Path, out_dir: str | Path, *, fmt: str = "peft", overwrite: bool = False) -> Path:
    """`lora-ft export`: rebuild a finished run's model (its config.yaml, base weights, trained.safetensors) as training
    built it, and export it in format `fmt` (see the module docstring) with a model card from its results."""
    from .build import RANDOM_BASE_KEY, rebuilt_model
    from .checkpoint import load_trained
    from .config import load_config
    from .divergence import check_finite_weights
    from .methods import build_method
    from .models.loading import load_tokenizer
    from .results import read_results, results_path
    from .run_dir import CONFIG_FILE as RUN_CONFIG_FILE

    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    if not (run_dir / RUN_CONFIG_FILE).is_file():
        raise ExportError(f"{run_dir} has no {RUN_CONFIG_FILE}: is it a lora-ft run directory?")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ExportError(f"export target {out_dir} exists and is not a directory")
    # One writer per output folder: a second export into it is refused (and leaves it alone) while this one writes.
    with RunLock(out_dir, command=f"lora-ft export --run {run_dir} --out {out_dir} --format {fmt}"):
        cfg = load_config(run_dir / RUN_CONFIG_FILE)
        check_format(build_method(cfg.method.name, cfg.method.config), fmt)  # from the config alone: before any weights
        results = read_results(run_dir) if results_path(run_dir).is_file() else None
        check_finite_weights(run_dir)  # never ship a diverged (NaN) model
        check_target(out_dir, overwrite)  # fail before loading any weights
        built = rebuilt_model(cfg, trained_in=run_dir, recorded=results.extra.get(RANDOM_BASE_KEY) if results else None)
        load_trained(built.model, run_dir)
        built.model.eval()
        # The base as the user named it (transformers does not expand "~"); a random_init base has no name anything
        # else could load.
        base = None if cfg.model.random_init else os.path.expanduser(cfg.model.name_or_path)
        card = model_card(built.method, fmt, base, cfg, results)
        if fmt == "peft":  # a random base has no name: its fingerprint lets `eval --adapter` check it
            from .build import base_fingerprint

            record = {RANDOM_BASE_KEY: base_fingerprint(cfg)} if cfg.model.random_init else None
            return export_peft(built.model, built.method, built.arch, out_dir, overwrite=overwrite, base_model=base,
                               card=card, record=record)
        if fmt == "merged":
            tokenizer = load_tokenizer(cfg.model)
            return export_merged(built.model, built.method, built.arch, tokenizer, out_dir, overwrite=overwrite,
                                 base_model=base, card=card)
        return export_lora_ft(built.model, built.method, cfg, out_dir, overwrite=overwrite, card=card)
