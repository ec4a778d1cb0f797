"""The demo script (scripts/demo_e2e.py) end to end on a tiny random model: it trains, scores base and trained, and
writes its table; the real demo (SmolLM2 on 640 rows) is measured in the README."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs a Java runtime")
def test_demo_script_runs_and_writes_its_table(tmp_path):
    config = yaml.safe_load((REPO / "configs" / "demo_e2e_cpu.yaml").read_text())
    config["model"] = {
        "name_or_path": "gpt2",
        "tokenizer": str(SHARED / "gpt2-tokenizer"),
        "random_init": True,
        "config_overrides": {"n_layer": 2, "n_embd": 32, "n_head": 2},
    }
    config["task"].update(max_train_examples=16, max_eval_examples=2)
    for key in ("train_file", "validation_file", "test_file"):
        config["task"][key] = str(REPO / config["task"][key])  # the shipped config's paths are relative to the repo
    config["training"]["warmup_steps"] = 1
    config["decoding"].update(num_beams=2, max_new_tokens=4)
    path = tmp_path / "demo_tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo_e2e.py"), "--config", str(path), "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = (out / "demo_table.md").read_text()
    assert table in done.stdout
    lines = table.splitlines()
    assert lines[0].startswith("| model & method | trainable | BLEU | NIST | METEOR | ROUGE_L | CIDEr |")
    assert lines[2].startswith("| gpt2, untrained (base) | 0 |")
    # LoRA r=4 on q and v of 2 blocks of width 32: 2 x 2 x (4 x 32 + 32 x 4) = 1,024 trainable
    assert lines[3].startswith("| gpt2 + LoRA r=4 q,v (2 steps on 16 rows) | 1,024 |")
    assert "| paper: GPT-2 M (LoRA) | 0.35M | 70.40 | 8.85 | 46.80 | 71.80 | 2.53 |" in table
    assert (out / "predictions-test-base.txt").is_file() and (out / "predictions-test-final.txt").is_file()
