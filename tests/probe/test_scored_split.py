"""Issue 17's probe, item 2: a config whose scored split reads the training rows is stopped by `config validate` and by
`train`, in one line, before any model loads (on main, E2E and SAMSum trained to the end with one warning and only
`eval` refused). Kept so that the next probe starts from it; the rules themselves: tests/tasks/test_split_roles.py."""

from __future__ import annotations

import pytest
import yaml
from tiny_runs import SHARED, tiny_run_config

from lora_ft.cli import main


def run_cli(capsys, *argv) -> tuple[int, list[str]]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def samsum_config(run_dir) -> dict:
    config = tiny_run_config(run_dir)
    config["task"] = {"name": "samsum", "train_file": str(SHARED / "samsum" / "train.csv"),
                      "validation_file": str(SHARED / "samsum" / "validation.csv"),
                      "test_file": str(SHARED / "samsum" / "test.csv"), "max_train_examples": 8, "max_eval_examples": 2}
    return config


@pytest.mark.parametrize("task", ["e2e", "samsum"])
@pytest.mark.parametrize("command", ["config validate", "train"])
def test_item2_scoring_the_training_file_is_refused_before_any_model_loads(tmp_path, capsys, monkeypatch, task, command):
    config = tiny_run_config(tmp_path / "run") if task == "e2e" else samsum_config(tmp_path / "run")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = []
    monkeypatch.setattr("lora_ft.build.adapted_model", lambda *a, **k: loaded.append(1))  # must never be reached
    override = f"task.test_file={config['task']['train_file']}"
    argv = ["config", "validate", path, override] if command == "config validate" else ["train", "--config", path, override]
    code, lines = run_cli(capsys, *argv)
    errors = [line for line in lines if not line.startswith("lora-ft: warning:")]
    assert code == 2 and len(errors) == 1, lines
    assert "training rows would be scored" in errors[0], errors[0]
    assert loaded == [] and not (tmp_path / "run" / "results.json").exists()
