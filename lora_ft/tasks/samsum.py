"""SAMSum (stand-in for the paper's GPT-3 Table 4): dialogue summarisation.

Rows as on the hub (`Samsung/samsum`, revision refs/convert/parquet; or the plain-CSV mirror `knkarthick/samsum`):
`id` (read as text), `dialogue` (turns separated by line breaks), `summary`.

Format (paper): the utterances joined by "\\n", then "\\n\\n"; target " {summary}". Scored with ROUGE-1/2/L
(`lora_ft.metrics.rouge`). A line break in this format separates dialogue turns, so the summary is one line: the first
generated line with text (`single_line`), and the 10 of 16,368 released summaries that hold a line break have it read as a
space (ROUGE's tokeniser splits on both alike). Local files: the CSV export or the corpus's released JSON (an array of
{id, summary, dialogue} objects, turns separated by CRLF). Licence CC BY-NC-ND 4.0: tests read ../shared/data, and the
fixtures hold synthetic dialogues only.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import EvalItem, Example, Row, Task


class SAMSumTask(Task):
    name = "samsum"
    metric_names = ("ROUGE-1", "ROUGE-2", "ROUGE-L")
    primary_metric = "ROUGE-L"
    default_hub_id = "Samsung/samsum"
    default_hub_revision = "refs/convert/parquet"
    hub_splits = {"train": "train", "validation": "validation", "test": "test"}
    required_columns = ("id", "dialogue", "summary")
    string_columns = ("id",)
    single_line = True
    prefix_init_text = " Summary:"  # the task word, as Li & Liang's "summarization"

    def example_from_row(self, row: Row, split: str) -> Example | None:
        values = row.values
        dialogue, summary = values["dialogue"] or "", values["summary"] or ""
        turns = [t.strip() for t in str(dialogue).splitlines() if t.strip()]
        if not turns or not str(summary).strip():
            return None  # nothing to learn from or score; skipped and counted in the log
        context = "\n".join(turns) + "\n\n"
        summary = " ".join(line.strip() for line in str(summary).splitlines() if line.strip())
        return Example(context, " " + summary, {"id": str(values["id"])})

    def score(self, predictions: Sequence[str], items: Sequence[EvalItem]) -> dict[str, float]:
        from ..metrics.rouge import score_rouge

        self.check_lengths(predictions, items)
        return dict(score_rouge(list(predictions), [i.references[0] for i in items]))
