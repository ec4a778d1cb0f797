"""Switching method with an override (`method.name=bitfit` on a LoRA config) drops the old method's keys, with a note."""

from __future__ import annotations

import logging

import pytest
import yaml

from lora_ft.config import load_config
from lora_ft.schema import ConfigError
from tiny_runs import tiny_run_config


@pytest.fixture
def lora_file(tmp_path):
    path = tmp_path / "lora.yaml"
    path.write_text(yaml.safe_dump(tiny_run_config(tmp_path / "run")))  # method: lora rank 2, alpha 4, dropout, targets
    return path


def _notes(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "replaces" in r.getMessage()]


def test_switching_to_bitfit_drops_loras_keys_with_one_note(lora_file, caplog):
    cfg = load_config(lora_file, ["method.name=bitfit"])
    assert cfg.method.to_dict() == {"name": "bitfit"}
    [note] = _notes(caplog)
    assert "method.rank" in note and "method.targets" in note and "replaces lora" in note


def test_keys_the_new_method_shares_are_kept(tmp_path, caplog):
    config = tiny_run_config(tmp_path / "run")
    config["method"] = {"name": "adapter_h", "bottleneck": 6}
    path = tmp_path / "adapter.yaml"
    path.write_text(yaml.safe_dump(config))
    assert load_config(path, ["method.name=adapter_l"]).method.to_dict()["bottleneck"] == 6
    assert not _notes(caplog)


def test_keys_given_on_the_command_line_are_still_checked(lora_file):
    with pytest.raises(ConfigError, match="unknown key 'rank' .*takes no keys"):
        load_config(lora_file, ["method.name=bitfit", "method.rank=8"])


def test_the_new_methods_required_keys_are_asked_for(lora_file):
    with pytest.raises(ConfigError, match="bottleneck"):
        load_config(lora_file, ["method.name=adapter_h"])
    assert load_config(lora_file, ["method.name=adapter_h", "method.bottleneck=8"]).method.to_dict()["bottleneck"] == 8


def test_without_a_switch_nothing_is_dropped(lora_file, caplog):
    assert load_config(lora_file, ["method.name=lora", "method.rank=8"]).method.config.rank == 8
    with pytest.raises(ConfigError, match="unknown key 'bottleneck'"):
        load_config(lora_file, ["method.bottleneck=8"])
    assert not _notes(caplog)


def test_the_cli_prints_the_note_once_on_stderr(lora_file):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "lora_ft", "config", "validate", str(lora_file), "method.name=bitfit"],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith(": valid")
    assert [line for line in out.stderr.splitlines() if line.strip()] == [
        line for line in out.stderr.splitlines() if line.startswith("lora-ft: warning: method.name=bitfit replaces lora")
    ] and out.stderr.count("method.name=bitfit replaces lora") == 1
