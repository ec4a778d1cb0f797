"""The committed mini-paper tables are what `lora-ft table` makes from the committed results.json files, byte for byte,
with the options scripts/mini_paper.sh passes (read from the script, so the two cannot drift apart)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from lora_ft.cli import build_parser
from lora_ft.report.table import build_table

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "results" / "mini_paper"
SCRIPT = REPO / "scripts" / "mini_paper.sh"


def script_table_options(table: int) -> list[str]:
    """The `lora-ft table` options mini_paper.sh gives Table `table`: its TABLE<N>_OPTIONS=(...) array."""
    match = re.search(rf"^TABLE{table}_OPTIONS=\((.*)\)$", SCRIPT.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, f"scripts/mini_paper.sh has no TABLE{table}_OPTIONS=(...) line"
    return shlex.split(match.group(1))


def test_table3_options_set_the_stand_in_beside_gpt2_medium():
    assert script_table_options(3) == ["--compare-with", "gpt2-medium"]
    assert script_table_options(4) == []


@pytest.mark.parametrize("table, fmt, suffix", [(3, "markdown", "md"), (3, "latex", "tex"),
                                                (4, "markdown", "md"), (4, "latex", "tex")])
def test_committed_table_is_regenerated_exactly(monkeypatch, table, fmt, suffix):
    committed = RESULTS / f"table{table}.{suffix}"
    if not committed.is_file():
        pytest.skip(f"{committed.relative_to(REPO)} is not committed yet")
    monkeypatch.chdir(REPO)  # as scripts/mini_paper.sh runs it: paths in the notes are relative to the repository
    args = build_parser().parse_args(["table", "--runs", f"results/mini_paper/table{table}", "--layout",
                                      f"table{table}", "--format", fmt, *script_table_options(table)])
    text = build_table([Path(r) for r in args.runs], layout=args.layout, fmt=args.format, epoch=args.epoch,
                       compare_with=args.compare_with)
    assert text == committed.read_text(encoding="utf-8")


def test_committed_search_table_is_regenerated_exactly(monkeypatch):
    """results/mini_paper/search.md: `lora-ft table --searches results/mini_paper/search`, as mini_paper.sh --search
    writes it."""
    committed = RESULTS / "search.md"
    if not committed.is_file():
        pytest.skip("results/mini_paper/search.md is not committed yet")
    monkeypatch.chdir(REPO)
    from lora_ft.report.searches import search_table

    assert search_table([Path("results/mini_paper/search")]) == committed.read_text(encoding="utf-8")
