"""Helpers for the task tests: the real E2E data, the synthetic fixtures, stand-ins for the metric modules."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def e2e_dir(shared_data_dir) -> Path:
    """../shared/data/e2e: valid.txt, test.txt (the authors' form) and devset.csv, testset_w_refs.csv (the original)."""
    return shared_data_dir / "e2e"


@pytest.fixture
def mnli_file(shared_data_dir) -> Path:
    """All 9,815 labelled rows of MNLI's dev_matched: offline, the training, selection and scored rows are slices of it."""
    return shared_data_dir / "mnli" / "dev_matched.jsonl"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def fake_metric(monkeypatch):
    """Install a stand-in `lora_ft.metrics.<module>` whose function records its arguments (tests the plumbing only)."""

    def install(module: str, function: str, result):
        calls = []

        def fn(*args, **kwargs):
            calls.append((args, kwargs))
            return result

        fake = types.ModuleType(f"lora_ft.metrics.{module}")
        setattr(fake, function, fn)
        monkeypatch.setitem(sys.modules, f"lora_ft.metrics.{module}", fake)
        import lora_ft.metrics as metrics_pkg

        monkeypatch.setattr(metrics_pkg, module, fake, raising=False)
        return calls

    return install


@pytest.fixture
def hub_up(monkeypatch):
    """Tests that fake `datasets.load_dataset` need the hub to look reachable (it is not, on CI), or loading stops
    before the fake is called."""
    monkeypatch.setattr("lora_ft.hub.hub_reachable", lambda: True)
