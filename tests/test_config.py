"""Config errors are caught at once (no weights, no torch needed) and name the key, the file and the fix."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from lora_ft.config import config_help, load_config
from lora_ft.config_checks import check_config
from lora_ft.schema import ConfigError

BASE = {
    "model": {"name_or_path": "gpt2-medium"},
    "task": {"name": "e2e"},
    "method": {"name": "lora", "rank": 4, "alpha": 32, "targets": ["q", "v"]},
    "training": {"epochs": 5},
}


def write(tmp_path: Path, **changes) -> Path:
    data = {section: dict(values) for section, values in BASE.items()}
    for section, values in changes.items():
        data[section] = values
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def load_and_check(path: Path, overrides: tuple[str, ...] = ()):
    cfg = load_config(path, overrides)
    check_config(cfg)
    return cfg


def fails_fast(path: Path, *fragments: str, overrides: tuple[str, ...] = ()) -> str:
    """The config is rejected within a second with a message holding every fragment."""
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_and_check(path, overrides)
    assert time.perf_counter() - start < 1.0
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_a_valid_config_loads(tmp_path):
    cfg = load_and_check(write(tmp_path))
    assert (cfg.method.name, cfg.method.config.rank, cfg.training.epochs) == ("lora", 4, 5)


def test_typo_in_a_method_key_names_key_file_and_closest(tmp_path):
    path = write(tmp_path, method={"name": "lora", "rnak": 4})
    fails_fast(path, "'rnak'", str(path), "did you mean 'rank'")


def test_typo_in_a_section_key(tmp_path):
    path = write(tmp_path, training={"epoch": 3})
    fails_fast(path, "'epoch'", str(path), "'epochs'")


def test_typo_in_a_section_name(tmp_path):
    path = write(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["trainig"] = data.pop("training")
    path.write_text(yaml.safe_dump(data))
    fails_fast(path, "'trainig'", "'training'")


def test_unknown_method_name(tmp_path):
    path = write(tmp_path, method={"name": "lorra"})
    fails_fast(path, "'lorra'", "did you mean 'lora'", str(path))


def test_rank_zero(tmp_path):
    fails_fast(write(tmp_path, method={"name": "lora", "rank": 0}), "method.rank", "positive", "got 0")


def test_target_weight_the_architecture_lacks(tmp_path):
    # GPT-2's MLP has no gate projection (LLaMA's has)
    path = write(tmp_path, method={"name": "lora", "targets": ["q", "mlp_gate"]})
    fails_fast(path, "'mlp_gate'", "gpt2", str(path))


def test_wrong_type(tmp_path):
    fails_fast(write(tmp_path, training={"epochs": "three"}), "training.epochs", "integer", "'three'")


def test_overrides(tmp_path):
    cfg = load_and_check(write(tmp_path), ("training.epochs=3", "method.rank=8", "training.learning_rate=1e-4"))
    assert cfg.training.epochs == 3 and cfg.method.config.rank == 8 and cfg.training.learning_rate == pytest.approx(1e-4)


def test_override_with_a_typo_fails(tmp_path):
    fails_fast(write(tmp_path), "'epohcs'", "'epochs'", overrides=("training.epohcs=3",))


def test_override_with_a_bad_value_fails(tmp_path):
    fails_fast(write(tmp_path), "method.rank", overrides=("method.rank=0",))


def test_config_help_lists_every_key_with_help_text():
    text = config_help()
    for line_start in ("training.epochs (int, default 5):", "method.rank (int, default 4):", "model.name_or_path"):
        assert line_start in text, line_start
    assert "r, the rank of each low-rank update" in text  # the help text itself, not only the key
    assert "method.name: adapter_l" in text and "method.bottleneck" in text
    only_lora = config_help("lora")
    assert "method.rank" in only_lora and "method.bottleneck" not in only_lora
