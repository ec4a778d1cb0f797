"""SAMSum task on synthetic dialogues (tests/fixtures/samsum_tiny.*; no SAMSum text)."""

from __future__ import annotations

from lora_ft.config import TaskConfig
from lora_ft.tasks import get_task


def test_csv_ids_stay_strings_and_turns_join_with_newlines(fixtures):
    task = get_task(TaskConfig(name="samsum", train_file=str(fixtures / "samsum_tiny.csv")))
    task.check_source()
    examples = task.load("train")
    assert len(examples) == 2  # the empty dialogue is skipped
    assert examples[0].meta["id"] == "00417"  # as text: an int would read 417
    assert examples[0].context == (
        "Ana: Are we still meeting at noon?\nBen: Yes, at the station.\nAna: Great, see you.\n\n"
    )
    assert examples[0].target == " Ana and Ben will meet at noon at the station."


def test_jsonl_reads_the_same(fixtures):
    from_csv = get_task(TaskConfig(name="samsum", test_file=str(fixtures / "samsum_tiny.csv"))).load("test")
    from_jsonl = get_task(TaskConfig(name="samsum", test_file=str(fixtures / "samsum_tiny.jsonl"))).load("test")
    assert from_csv == from_jsonl


def test_score_passes_summaries(fixtures, fake_metric):
    calls = fake_metric("rouge", "score_rouge", {"ROUGE-1": 40.0, "ROUGE-2": 20.0, "ROUGE-L": 30.0})
    task = get_task(TaskConfig(name="samsum", test_file=str(fixtures / "samsum_tiny.csv"), max_eval_examples=1))
    items = task.eval_items(task.load("test"))
    assert task.score(["Ana meets Ben."], items) == {"ROUGE-1": 40.0, "ROUGE-2": 20.0, "ROUGE-L": 30.0}
    (args, _), = calls
    assert args == (["Ana meets Ben."], ["Ana and Ben will meet at noon at the station."])
