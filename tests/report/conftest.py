"""Helpers for the report tests: small run directories with hand-picked scores."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest

from lora_ft.results import EpochRecord, Evaluation, ParameterCounts, RunResults, write_results

BASE_CONFIG: dict[str, Any] = {
    "model": {"name_or_path": "gpt2-medium"},
    "task": {"name": "e2e"},
    "method": {"name": "lora", "rank": 4, "alpha": 32, "dropout": 0.1, "targets": ["q", "v"]},
    "training": {"epochs": 2, "batch_size": 8, "learning_rate": 2e-4, "seed": 110},
    "decoding": {"num_beams": 10},
    "output": {"dir": "runs/x"},
}


def make_config(**sections: dict[str, Any]) -> dict[str, Any]:
    """BASE_CONFIG with the given sections replaced (e.g. method={...})."""
    config = copy.deepcopy(BASE_CONFIG)
    for name, value in sections.items():
        config[name] = copy.deepcopy(value)
    return config


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., Path]:
    """make_run(name, seed=..., method=/model=/task=/training= section overrides,
    evaluations=[(split, epoch, scores) or (split, epoch, scores, predictions_file)], status=..., error=...,
    trainable=..., base_total=..., val_losses=[...], extra={...})
    -> run dir (total parameters: base_total + trainable, GPT-2 M's by default)."""

    def _make(
        name: str,
        *,
        seed: int,
        model: dict[str, Any] | None = None,
        task: dict[str, Any] | None = None,
        method: dict[str, Any] | None = None,
        training: dict[str, Any] | None = None,
        evaluations: list[tuple] = (),
        status: str = "evaluated",
        error: str | None = None,
        trainable: int | None = 393_216,
        base_total: int = 354_823_168,
        val_losses: list[float] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Path:
        sections = {"model": model, "task": task, "method": method, "training": training}
        config = make_config(**{k: v for k, v in sections.items() if v is not None})
        config["training"]["seed"] = seed
        run_dir = tmp_path / "runs" / name
        config["output"]["dir"] = str(run_dir)
        results = RunResults.start(name, config)
        results.status = status  # type: ignore[assignment]
        results.error = error
        if trainable is not None:
            results.parameters = ParameterCounts(trainable, base_total + trainable, {"lora": trainable})
        for epoch, loss in enumerate(val_losses or [], start=1):
            results.add_epoch(EpochRecord(epoch=epoch, step=100 * epoch, train_loss=loss + 0.1, validation_loss=loss))
        for split, epoch, scores, *predictions_file in evaluations:
            results.add_evaluation(Evaluation(split=split, epoch=epoch, scores=scores, num_items=630,
                                              predictions_file=next(iter(predictions_file), None)))
        results.extra.update(extra or {})
        write_results(run_dir, results)
        return run_dir

    return _make
