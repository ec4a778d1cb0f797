"""Fixtures for the metrics tests: the shared test data (../shared/data relative to the repository root)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; tests that need it are skipped (not failed) where it is not there."""
    if not (SHARED_DATA / "e2e" / "test.txt").is_file():
        pytest.skip(f"shared test data not found under {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def e2e_test_set(shared_data: Path) -> tuple[list[str], list[list[str]]]:
    """The E2E test split (authors' `MR||reference` file): 630 MRs in first-appearance order, references grouped."""
    groups: dict[str, list[str]] = {}
    for line in (shared_data / "e2e" / "test.txt").read_text(encoding="utf-8").splitlines():
        mr, ref = line.split("||", 1)
        groups.setdefault(mr.strip(), []).append(ref.strip())
    return list(groups), list(groups.values())


@pytest.fixture(scope="session")
def tokenized_e2e_references(e2e_test_set: tuple[list[str], list[list[str]]]) -> list[list[str]]:
    """The first 300 test MRs' references, PTB-tokenised as the COCO scorers see them, grouped per MR."""
    from lora_ft.metrics.ptb_tokenizer import coco_tokenize_batch

    references = e2e_test_set[1][:300]
    flat = coco_tokenize_batch([ref for refs in references for ref in refs])
    groups, start = [], 0
    for refs in references:
        groups.append(flat[start : start + len(refs)])
        start += len(refs)
    return groups


@pytest.fixture(scope="session")
def e2e_example(shared_data: Path) -> tuple[list[str], list[list[str]]]:
    """The official scorer's example: (baseline outputs, reference groups), read without the code under test."""
    folder = shared_data / "e2e-metrics-example"
    predictions = (folder / "baseline-output.txt").read_text(encoding="utf-8").splitlines()
    blocks = (folder / "devel-conc.txt").read_text(encoding="utf-8").strip().split("\n\n")
    return predictions, [block.splitlines() for block in blocks]
