"""The committed mini-paper tables are what `lora-ft table` makes from the committed results.json files, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_ft.report.table import build_table

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "results" / "mini_paper"


@pytest.mark.parametrize("table, fmt, suffix", [(3, "markdown", "md"), (3, "latex", "tex")])
def test_committed_table_is_regenerated_exactly(monkeypatch, table, fmt, suffix):
    committed = RESULTS / f"table{table}.{suffix}"
    if not committed.is_file():
        pytest.skip(f"{committed.relative_to(REPO)} is not committed yet")
    monkeypatch.chdir(REPO)  # as scripts/mini_paper.sh runs it: paths in the notes are relative to the repository
    text = build_table([Path(f"results/mini_paper/table{table}")], layout=f"table{table}", fmt=fmt)
    assert text == committed.read_text(encoding="utf-8")
