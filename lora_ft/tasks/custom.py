"""`task.name: custom`: your own data in the paper's harness, a prompt template over named columns and a target column.

    task:
      name: custom
      train_file: data/train.jsonl        # .jsonl .json .csv .tsv .parquet, or a hub dataset: task.hub_id
      validation_file: data/dev.jsonl     # or one file with task.train_slice / validation_slice / test_slice
      test_file: data/test.jsonl
      prompt: "Question: {question}\\nContext: {context}\\nAnswer:"
      target: answer
      metric: exact_match                 # bleu | rouge | accuracy | exact_match

The paper's conventions, as the built-in tasks follow them (lora_ft/data.py): an example is the filled prompt (the
context) and " " + the target column's text (the completion, with its leading space); the loss is on the completion
and its EOS only; decoding is the authors' beam search, primed with the prompt. With task.single_line (the default) a
completion is one line, as SAMSum's and MNLI's: the target's line breaks become spaces and the first generated line with
text is scored; task.single_line: false keeps the E2E rule (decoding stops at EOS or a blank line).

Scoring (lora_ft/metrics/generic.py): bleu is the official E2E scorer's BLEU, over every reference of a prompt (rows with
the same filled prompt are one item, as E2E's MRs); rouge is SAMSum's ROUGE-1/2/L; accuracy classifies by the generated
words (the labels are the distinct targets); exact_match compares normalised strings. Splits, slices and the check that
training, selection and scored rows do not overlap are the built-in tasks' (lora_ft/tasks/base.py).
"""

from __future__ import annotations

import string
from collections.abc import Sequence

from .base import EvalItem, Example, Row, Task, TaskDataError

METRICS = {  # task.metric -> (the scores it reports, the primary one)
    "bleu": (("BLEU",), "BLEU"),
    "rouge": (("ROUGE-1", "ROUGE-2", "ROUGE-L"), "ROUGE-L"),
    "accuracy": (("accuracy",), "accuracy"),
    "exact_match": (("exact_match",), "exact_match"),
}
SETTINGS = ("prompt", "target", "metric")  # TaskConfig fields only this task reads


class CustomTask(Task):
    name = "custom"
    default_hub_id = ""
    hub_splits = {"train": "train", "validation": "validation", "test": "test"}
    local_suffixes = (".jsonl", ".json", ".csv", ".parquet", ".tsv")

    def __init__(self, config):
        super().__init__(config)
        missing = [f"task.{key}" for key in SETTINGS if not getattr(config, key, None)]
        if missing:
            raise TaskDataError(f"task.name: custom needs {', '.join(missing)} (e.g. prompt: '{{question}}\\nAnswer:', "
                                f"target: answer, metric: {' | '.join(METRICS)})")
        if config.metric not in METRICS:
            raise TaskDataError(f"task.metric {config.metric!r} is not one of {', '.join(METRICS)}")
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(config.prompt) if name is not None]
        except ValueError as exc:
            raise TaskDataError(f"task.prompt is not a template of {{column}} fields ({exc}); write a literal brace "
                                "as {{ or }}") from None
        if any(not name.isidentifier() for name in fields):
            raise TaskDataError(f"task.prompt: fields must name columns, e.g. {{question}}; got {fields}")
        if not fields:
            raise TaskDataError("task.prompt names no column: fill it from your data, e.g. 'Question: {question}\\nAnswer:'")
        self.fields = list(dict.fromkeys(fields))
        self.required_columns = (*self.fields, config.target)
        self.metric_names, self.primary_metric = METRICS[config.metric]
        self.single_line = config.single_line
        self.grouped_references = config.metric == "bleu"  # one references group per prompt, as E2E's scorer file

    def hub_id(self) -> str:
        if not self.config.hub_id:
            raise TaskDataError("the custom task reads local files (task.train_file, task.validation_file, "
                                "task.test_file) or a hub dataset (task.hub_id); neither is set for a split it needs")
        return self.config.hub_id

    def example_from_row(self, row: Row, split: str) -> Example | None:
        values = {k: "" if v is None else str(v) for k, v in row.values.items()}
        target = values.get(self.config.target, "").strip()
        if not target:
            return None  # nothing to learn or score; skipped and counted in the log
        if self.single_line:
            target = " ".join(line.strip() for line in target.splitlines() if line.strip())
        return Example(self.config.prompt.format_map(values), " " + target)

    def eval_items(self, examples: Sequence[Example]) -> list[EvalItem]:
        if not self.grouped_references:
            return super().eval_items(examples)
        grouped: dict[str, list[str]] = {}
        for example in examples:  # rows with one prompt are one item, scored against all their targets
            grouped.setdefault(example.context, []).append(example.target.strip())
        return [EvalItem(context, tuple(references)) for context, references in grouped.items()]

    def score(self, predictions: Sequence[str], items: Sequence[EvalItem], **_options) -> dict[str, float]:
        from ..metrics import generic
        from ..metrics.rouge import score_rouge

        self.check_lengths(predictions, items)
        references = [list(i.references) for i in items]
        metric = self.config.metric
        if metric == "rouge":
            return score_rouge(list(predictions), [refs[0] for refs in references])
        scorer = {"bleu": generic.bleu, "accuracy": generic.label_accuracy, "exact_match": generic.exact_match}[metric]
        return scorer(list(predictions), references)
