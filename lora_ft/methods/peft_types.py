"""peft's method types (`peft.PeftType`) as `method.name: peft` meets them: which ones lora-ft trains, which it
refuses and why, and how a table labels a run of one.

Read without importing peft (which imports torch): `lora-ft config validate` refuses a type in milliseconds, before any
model loads. tests/methods/test_peft_types.py walks peft's own `PeftType`: a type a newer peft adds fails that test until
it is listed here, as working (then it trains, exports and decodes a tiny model there) or refused with its reason.

How the types reach lora-ft's loop (lora_ft/methods/peft_method.py):
- tuners (LoRA and its variants, IA3, VeRA, LoHa, LoKr, OFT, BOFT, ...): `get_peft_model` injects their layers into
  the model in place; lora-ft's Trainer trains that model, whose forward is then peft's (peft's wrapper forward only
  passes the call on for these types). Packing, the completion-only LM head and the beam search's cache work as for
  lora-ft's own methods.
- PROMPT_TYPES: their virtual tokens' embeddings do not depend on the input, so lora-ft's virtual-token slots
  (lora_ft/data.py, as PreEmbed's) carry them: the same model as peft's wrapper forward, which prepends them, but
  packable and decoded with the paper's beam search.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any

from ..schema import ConfigError

# Every PeftType of peft 0.21 lora-ft trains: the tuners, then the two prompt types.
TUNER_TYPES = (
    "LORA", "BOFT", "IA3", "BEFT", "LOHA", "LOKR", "OFT", "LN_TUNING", "VERA", "FROD", "PVERA", "FOURIERFT",
    "GLORA", "HRA", "VBLORA", "UNILORA", "MISS", "RANDLORA", "ROAD", "TRAINABLE_TOKENS", "HIRA", "SHIRA", "C3A",
    "WAVEFT", "OSF", "DELORA", "GRALORA", "TINYLORA", "PSOFT", "PEANUT", "SUPERTUNING", "DEFT", "ADAPTION_PROMPT",
)
PROMPT_TYPES = ("PROMPT_TUNING", "P_TUNING")

_KV_PREFIX = ("its forward hands every layer learned keys and values through past_key_values, which lora-ft's packed "
              "batches and its beam search's prompt-shared cache do not carry; lora-ft's prelayer and preembed are the "
              "LoRA paper's prefix methods")
_TASK_IDS = "which lora-ft's tasks do not give (one task per run)"

# The types lora-ft refuses, each with the reason `config validate` prints.
REFUSED: dict[str, str] = {
    "PREFIX_TUNING": _KV_PREFIX,
    "CARTRIDGE": _KV_PREFIX,
    "CPT": "it trains with its own loss, weighted by token-type masks (cpt_token_ids, cpt_mask), in peft's wrapper "
    "forward, not with the task's loss on the completion",
    "MULTITASK_PROMPT_TUNING": f"its prompt depends on a task id per example (task_ids), {_TASK_IDS}; PROMPT_TUNING is "
    "its one-task form",
    "POLY": f"it routes each example by a task id (task_ids), {_TASK_IDS}",
    "XLORA": "it mixes already trained LoRA adapters by a classifier that peft's wrapper runs in a second forward pass "
    "(without a KV cache); train the LoRA adapters here instead",
    "ADALORA": "its rank allocation calls update_and_allocate after every optimizer step, with importance statistics "
    "lora-ft's checkpoints do not hold (so --resume could not continue it), and its orthogonality loss is added in "
    "peft's wrapper forward; use LORA (with use_dora or use_rslora if wanted)",
    "ADAMSS": "its subspace allocation (use_asa) runs as a training callback lora-ft's loop does not call, and it "
    "needs scikit-learn",
    "LILY": "its router averages the expert weights over every token of the batch, padding included, so that an "
    "example's output depends on the others in its batch: packed and padded batches, and the beam search's, would each "
    "be another model",
    "SHADOW": "its shadow network runs beside the model in peft's wrapper, which adds its auxiliary loss: outside the "
    "model lora-ft's loop trains",
}

# Settings inside a supported type that need what the loop does not do.
REFUSED_SETTINGS: dict[str, dict[str, str]] = {
    "LORA": {
        "alora_invocation_tokens": "aLoRA starts its update after the invocation tokens, which peft's wrapper finds "
        "in the input ids (alora_offsets) on every forward; lora-ft's loop calls the model itself",
    },
}

# How tables print a type, and the settings that define its size (beside target_modules).
DISPLAY = {
    "LORA": "LoRA", "IA3": "(IA)^3", "LOHA": "LoHa", "LOKR": "LoKr", "VERA": "VeRA", "PVERA": "PVeRA",
    "FOURIERFT": "FourierFT", "VBLORA": "VB-LoRA", "PROMPT_TUNING": "Prompt tuning", "P_TUNING": "P-tuning",
    "ADAPTION_PROMPT": "Adaption prompt", "LN_TUNING": "LN tuning", "RANDLORA": "RandLoRA", "TRAINABLE_TOKENS":
    "Trainable tokens", "WAVEFT": "WaveFT", "DELORA": "DeLoRA", "GRALORA": "GraLoRA", "TINYLORA": "TinyLoRA",
    "UNILORA": "UniLoRA", "GLORA": "GLoRA", "HIRA": "HiRA", "SHIRA": "SHiRA", "MISS": "MiSS", "ROAD": "RoAd",
}
SIZE_KEYS: dict[str, tuple[str, ...]] = {
    "OFT": ("r", "oft_block_size"),
    "BOFT": ("boft_block_size", "boft_block_num", "boft_n_butterfly_factor"),
    "FOURIERFT": ("n_frequency",),
    "WAVEFT": ("n_frequency",),
    "VBLORA": ("r", "num_vectors", "vector_length"),
    "C3A": ("block_size",),
    "ROAD": ("variant", "group_size"),
    "ADAPTION_PROMPT": ("adapter_len", "adapter_layers"),
    "PROMPT_TUNING": ("num_virtual_tokens",),
    "P_TUNING": ("num_virtual_tokens", "encoder_hidden_size"),
    "TRAINABLE_TOKENS": ("token_indices",),
    "IA3": ("feedforward_modules",),
}
DEFAULT_SIZE_KEYS = ("r",)
VARIANTS = (("use_dora", "DoRA"), ("use_rslora", "rsLoRA"))


# adapter_config.json keys that are not the method's settings (peft fills them, or lora-ft does)
NOT_SETTINGS = ("base_model_name_or_path", "revision", "inference_mode", "task_type", "auto_mapping", "peft_version")


def settings_of(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A saved peft config (adapter_config.json) as `method.peft` settings."""
    return {k: v for k, v in saved.items() if k not in NOT_SETTINGS}


def known_types() -> tuple[str, ...]:
    return (*TUNER_TYPES, *PROMPT_TYPES, *REFUSED)


def refusal(peft: Mapping[str, Any]) -> str | None:
    """Why lora-ft cannot train the peft config `peft` (one line, no key prefix), or None."""
    peft_type = str(peft.get("peft_type", "")).upper()
    if peft_type in REFUSED:
        return f"peft_type {peft_type} cannot train in lora-ft's loop: {REFUSED[peft_type]}"
    for key, why in REFUSED_SETTINGS.get(peft_type, {}).items():
        if peft.get(key):
            return f"{peft_type} with {key} cannot train in lora-ft's loop: {why}"
    return None


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) if len(value) <= 8 else f"{len(value)} items"
    return str(value)


def peft_label_parts(peft: Mapping[str, Any]) -> tuple[str, str]:
    """(name, size): ("LoRA+DoRA", "r=8 q_proj,v_proj"), ("VeRA", "r=256 q_proj,v_proj"), ("Prompt tuning",
    "num_virtual_tokens=20"): the type with its variant flags, then its size-defining settings and its targets, from a
    (resolved) peft config mapping."""
    peft_type = str(peft.get("peft_type", "?")).upper()
    name = DISPLAY.get(peft_type, peft_type) + "".join(f"+{v}" for key, v in VARIANTS if peft.get(key))
    parts = [f"{key}={_short(peft[key])}" for key in SIZE_KEYS.get(peft_type, DEFAULT_SIZE_KEYS)
             if peft.get(key) is not None]
    targets = peft.get("target_modules")
    if targets:  # module names, not paths: a lora-ft export names every module by its path
        parts.append(_short(sorted({str(t).rsplit(".", 1)[-1] for t in targets})
                            if isinstance(targets, (list, tuple, set)) else targets))
    return name, " ".join(parts)


def peft_label(peft: Mapping[str, Any]) -> str:
    """"LoRA+DoRA r=8 q_proj,v_proj": `peft_label_parts` joined."""
    return " ".join(part for part in peft_label_parts(peft) if part)


def build_peft_config(peft: Mapping[str, Any], base_model: str | None = None):
    """The peft config object of the mapping `peft` (task type CAUSAL_LM), checked by peft's own config class: an
    unknown field (with the closest one) or a value peft rejects is a one-line ConfigError. Imports peft (and torch)."""
    from peft import get_peft_config
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    peft_type = str(peft["peft_type"]).upper()
    config_class = PEFT_TYPE_TO_CONFIG_MAPPING.get(peft_type)
    if config_class is None:
        raise ConfigError(f"method.peft.peft_type {peft_type}: this peft ({_peft_version()}) has no such type")
    fields = [f.name for f in dataclasses.fields(config_class) if f.init]
    for key in peft:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"method.peft.{key}: {config_class.__name__} has no field {key!r}{hint}")
    values = {**peft, "peft_type": peft_type, "task_type": "CAUSAL_LM"}
    if base_model is not None:
        values["base_model_name_or_path"] = base_model
    try:
        return get_peft_config(values)
    except (TypeError, ValueError, ImportError) as exc:
        raise ConfigError(f"method.peft ({peft_type}): peft refuses it: {' '.join(str(exc).split())}") from None


def _peft_version() -> str:
    import peft

    return f"peft {peft.__version__}"
