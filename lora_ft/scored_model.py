"""Scoring a model lora-ft did not train here: a peft adapter folder (`lora-ft eval --config FILE --adapter DIR`, a
user's or one `lora-ft export` wrote) or a model folder (`model.name_or_path=DIR` with `--base`, e.g. a merged export).

The adapter goes on the config's base model exactly as a `method.name: peft` run's adapter does at evaluation
(lora_ft/methods/peft_method.py: `load_peft_adapter`, merged before decoding where peft can merge it), so its scores
are those the run it came from got. Its provenance goes into results.json (`extra["scored_model"]`: the folder, its peft
config, a sha256 of its weight files), which `lora-ft table` labels the row by.

An adapter whose base model is not the config's model is refused in one line: by name (adapter_config.json's
base_model_name_or_path against model.name_or_path: the same string, folder, or model name after its hub organisation),
or, for a `model.random_init` config, by the fingerprint of the random base that `lora-ft export` records.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path, PurePosixPath
from typing import Any

from .config import RunConfig
from .errors import UserError

logger = logging.getLogger("lora_ft.scored_model")

ADAPTER_CONFIG = "adapter_config.json"
SCORED_KEY = "scored_model"  # results.json extra key
EXPORT_MANIFEST = "lora_ft_export.json"  # export.MANIFEST_FILE (not imported: export imports the model stack)
RANDOM_BASE_KEY = "random_base_sha256"  # build.RANDOM_BASE_KEY
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


class AdapterError(UserError, ValueError):
    """An adapter or model folder that cannot be scored with the config (the message says why)."""


def weights_sha256(folder: str | Path) -> str:
    """sha256 over the names and bytes of the folder's weight files (*.safetensors, *.bin), in name order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _manifest(folder: Path) -> dict:
    try:
        data = json.loads((folder / EXPORT_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def adapter_settings(folder: str | Path) -> dict[str, Any]:
    """The folder's adapter_config.json; one line if it has none or it is not JSON."""
    path = Path(folder) / ADAPTER_CONFIG
    if not Path(folder).is_dir():
        raise AdapterError(f"--adapter {folder}: no such folder (a peft adapter folder, as save_pretrained writes it)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterError(f"--adapter {folder} has no {ADAPTER_CONFIG}: is it a peft adapter folder (save_pretrained)? "
                           "A merged model folder is scored with model.name_or_path=DIR --base") from None
    except (OSError, ValueError) as exc:
        raise AdapterError(f"--adapter {folder}: its {ADAPTER_CONFIG} cannot be read ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("peft_type"), str):
        raise AdapterError(f"--adapter {folder}: its {ADAPTER_CONFIG} names no peft_type")
    return data


def same_model(a: str, b: str) -> bool:
    """Whether two model names denote one model: the same string or folder, or one hub id without its organisation
    ("gpt2-medium" and "openai-community/gpt2-medium"; a folder named after the model's hub name)."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return PurePosixPath(a.rstrip("/")).name.lower() == PurePosixPath(b.rstrip("/")).name.lower()


def check_adapter_base(cfg: RunConfig, folder: str | Path, settings: dict[str, Any]) -> None:
    """AdapterError (one line) unless the adapter was trained on the config's model (module docstring)."""
    base, configured = settings.get("base_model_name_or_path"), cfg.model.name_or_path
    if cfg.model.random_init:
        if base:
            raise AdapterError(f"--adapter {folder} was trained on {base!r}, but the config's model is random weights "
                               f"(model.random_init); set model.name_or_path={base} and model.random_init=false")
        recorded = _manifest(Path(folder)).get(RANDOM_BASE_KEY)
        if recorded is None:
            logger.warning("--adapter %s names no base model: that it was trained on the random weights training.seed "
                           "%d draws is not checked", folder, cfg.training.seed)
            return
        from .build import base_fingerprint

        if base_fingerprint(cfg) != recorded:
            raise AdapterError(f"--adapter {folder} was trained on other random weights than model.random_init draws "
                               f"from training.seed {cfg.training.seed} here; use the config of the run it came from")
        return
    if not base:
        logger.warning("--adapter %s names no base model (base_model_name_or_path): not checked against %s", folder,
                       configured)
        return
    if not same_model(str(base), configured):
        raise AdapterError(f"--adapter {folder} was trained on {base!r}, but the config's model is {configured!r}; "
                           f"set model.name_or_path to {base!r} (or a folder holding that model)")


def adapter_method_section(folder: str | Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The config's method section for an evaluation of the adapter: `method.name: peft` with its settings (checked
    as a training config's are, so that a type lora-ft refuses is refused here in one line)."""
    from .methods.configs import PeftMethodConfig
    from .methods.peft_types import settings_of
    from .schema import ConfigError

    section = {"name": "peft", "peft": settings_of(settings)}
    try:
        PeftMethodConfig(peft=section["peft"])
    except ConfigError as exc:
        raise AdapterError(f"--adapter {folder}: {exc}") from None
    return section


def load_adapter(cfg: RunConfig, folder: str | Path):
    """(model, method): the config's base model (random_init drawn from training.seed as training draws it) with the
    adapter on it, in eval mode."""
    from .build import seeded_base_model
    from .methods.peft_method import load_peft_adapter
    from .models import architecture_for

    model = seeded_base_model(cfg)
    try:
        method = load_peft_adapter(model, architecture_for(model), str(folder))
    except (RuntimeError, ValueError, KeyError) as exc:  # peft's size mismatch: another model's shapes
        first = " ".join(str(exc).split())[:300]
        raise AdapterError(f"--adapter {folder} does not fit the config's model {cfg.model.name_or_path!r}: {first}") from None
    return model.eval(), method


def adapter_record(folder: str | Path, settings: dict[str, Any]) -> dict[str, Any]:
    """results.json's record of a scored adapter: what a reader needs to find and verify it."""
    from .methods.peft_types import peft_label

    return {"kind": "peft adapter", "path": str(Path(folder).resolve()), "peft_config": settings,
            "weights_sha256": weights_sha256(folder), "label": f"peft {peft_label(settings)}"}


def folder_record(path: str | Path) -> dict[str, Any] | None:
    """results.json's record of a scored model folder (None when `path` is not a local folder: a hub id)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return None
    manifest = _manifest(folder)  # a lora-ft export's: tables label the row by it ("merged export")
    label = {"label": f"{manifest['format']} export"} if manifest.get("format") else {}
    return {"kind": "model folder", "path": str(folder.resolve()), "weights_sha256": weights_sha256(folder), **label,
            **({"export": manifest} if manifest else {})}
