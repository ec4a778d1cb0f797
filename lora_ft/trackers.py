"""Experiment tracking (`training.report_to`) through Accelerate's trackers, as HF Trainer users know it.

    training:
      report_to: [tensorboard, wandb]     # or "all" (every one installed), or "none" (the default, as HF Trainer v5)

Each tracker is optional: its package comes with an extra (`pip install "lora-ft[tensorboard]"`). A tracker asked for
whose package is missing is a one-line ConfigError, raised before any model is loaded. What is logged: the resolved
config once (flattened to dotted keys), then train/loss, train/lr, train/tokens_per_s every `log_every_steps` and
valid/loss after each epoch, at the optimizer step. The project is "lora-ft" (the W&B project; the MLflow experiment,
which MLFLOW_EXPERIMENT_NAME overrides), the run is named after the run directory, and TensorBoard writes its event
files to <run dir>/lora-ft/.

A resumed run continues the same tracker run: the W&B run id and the MLflow run id are kept in results.json
(extra["trackers"]) and handed back on `--resume` (W&B `id` with `resume="allow"`, MLflow `run_id`), so the curves of
every attempt (a requeued job's too) are one run. Its config is logged once, by the first attempt (MLflow refuses a
parameter whose value changes, and a resume may change harmless keys: results.json records those).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping, Sequence
from typing import Any

from .schema import ConfigError

# tracker -> the module Accelerate imports for it; the pip extra of lora-ft that installs it has the tracker's name.
TRACKER_MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
PROJECT = "lora-ft"


def _installed(tracker: str) -> bool:
    return importlib.util.find_spec(TRACKER_MODULES[tracker]) is not None


def resolve_trackers(report_to: Sequence[str]) -> list[str]:
    """The Accelerate trackers for `training.report_to`; a tracker whose package is missing raises ConfigError."""
    if "all" in report_to:
        return [name for name in TRACKER_MODULES if _installed(name)]
    trackers = [name for name in dict.fromkeys(report_to) if name != "none"]
    for name in trackers:
        if not _installed(name):
            raise ConfigError(
                f"training.report_to: {name!r} needs the {TRACKER_MODULES[name]} package, which is not installed; "
                f"install it with: pip install \"lora-ft[{name}]\" (or leave {name!r} out of report_to)"
            )
    return trackers


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"training": {"seed": 3}} -> {"training.seed": 3}; lists and nulls as JSON text (TensorBoard's hparams take
    only numbers, strings and booleans)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            flat.update(flat_config(value, f"{prefix}{key}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[f"{prefix}{key}"] = value
        else:
            flat[f"{prefix}{key}"] = json.dumps(value, default=str)
    return flat


def start_trackers(accelerator, run_name: str, config: Mapping[str, Any], resumed: Mapping[str, str] | None = None
                   ) -> dict[str, str]:
    """Start the trackers the Accelerator was built with (`log_with`), logging the resolved config; `resumed`: the run
    ids an earlier attempt recorded, to continue those runs. Returns the W&B / MLflow run ids (for results.json)."""
    ids = dict(resumed or {})
    wandb = {"name": run_name, **({"id": ids["wandb"], "resume": "allow"} if "wandb" in ids else {})}
    mlflow = {"run_name": run_name, **({"run_id": ids["mlflow"]} if "mlflow" in ids else {})}
    accelerator.init_trackers(PROJECT, config=None if ids else flat_config(config),
                              init_kwargs={"wandb": wandb, "mlflow": mlflow})
    return tracker_run_ids(accelerator)


def tracker_run_ids(accelerator) -> dict[str, str]:
    """{"wandb": id, "mlflow": id} of the trackers started (main process; the others have none)."""
    ids = {}
    for tracker in getattr(accelerator, "trackers", None) or []:
        if tracker.name == "wandb":
            ids["wandb"] = str(tracker.run.id)
        elif tracker.name == "mlflow":
            ids["mlflow"] = str(tracker.active_run.info.run_id)
    return ids
