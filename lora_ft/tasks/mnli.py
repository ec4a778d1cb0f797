"""MNLI-matched (stand-in for the paper's GPT-3 Table 4): does the premise entail the hypothesis?

Rows as on the hub (`nyu-mll/glue`, config `mnli`): `premise`, `hypothesis`, `label` (0 entailment, 1 neutral,
2 contradiction). "validation" means validation_matched; the hub's test splits have no labels (-1), so on the hub
there is no "test" and validation is scored (the paper's configs set task.select_on_scored_split). Local files may also be in MNLI's other released forms: GLUE's tsv
(`dev_matched.tsv`: sentence1, sentence2, gold_label, quotes unescaped) or MultiNLI's jsonl (`multinli_1.0_dev_matched.jsonl`:
the same names); labels as ids or words. Rows whose gold label is '-' (no annotator majority; GLUE drops them) are skipped.
Offline there are no training rows: train, select and score on three disjoint slices of dev_matched (task.train_slice,
validation_slice, test_slice; a local labelled task.test_file makes a test split).

Format (GPT-3 style; the paper gives none): context "{premise}\\nQuestion: {hypothesis} True, False, or Neither?\\nAnswer:",
target " True" / " Neither" / " False". Scored by the generated word: the first word of the output, case and
punctuation ignored; anything else counts as wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from .base import EvalItem, Example, Row, Task, TaskDataError

LABEL_WORDS = ("True", "Neither", "False")  # index = GLUE label id
NO_GOLD_LABEL = "-"  # MultiNLI's gold_label when the annotators had no majority
LABEL_NAMES = {"entailment": 0, "neutral": 1, "contradiction": 2}  # accepted in local files instead of ids


class MNLITask(Task):
    name = "mnli"
    metric_names = ("accuracy",)
    primary_metric = "accuracy"
    default_hub_id = "nyu-mll/glue"
    default_hub_config = "mnli"
    hub_splits = {"train": "train", "validation": "validation_matched"}
    missing_split_reasons = {
        "test": "MNLI's test labels are hidden on the hub (label -1); score 'validation' (validation_matched), or set "
        "task.test_file to a labelled local file (e.g. a slice of dev_matched.jsonl, task.test_slice)"
    }
    required_columns = ("premise", "hypothesis", "label")
    column_aliases = {"premise": ("sentence1",), "hypothesis": ("sentence2",), "label": ("gold_label",)}
    local_suffixes = (".jsonl", ".json", ".csv", ".parquet", ".tsv")
    single_line = True  # the answer is one word; a line break ends it
    prefix_init_text = " Answer:"  # the format's own cue for the answer (measured: README, prefix initialisation)

    def has_split(self, split: str) -> bool:
        """A labelled local test file makes a test split (offline: train, select and score on slices of dev_matched)."""
        if split == "test":
            return self.config.source != "hub" and self.local_file_setting("test") is not None
        return super().has_split(split)

    def example_from_row(self, row: Row, split: str) -> Example | None:
        values = row.values
        if values["label"] == NO_GOLD_LABEL:
            return None  # no annotator majority: GLUE leaves these rows out; skipped and counted in the log
        label = label_id(values["label"], row.where)
        premise, hypothesis = values["premise"], values["hypothesis"]
        if not isinstance(premise, str) or not premise.strip() or not isinstance(hypothesis, str) or not hypothesis.strip():
            raise TaskDataError(f"{row.where}: empty premise or hypothesis")
        context = f"{premise.strip()}\nQuestion: {hypothesis.strip()} True, False, or Neither?\nAnswer:"
        return Example(context, " " + LABEL_WORDS[label], {"label": label})

    def score(self, predictions: Sequence[str], items: Sequence[EvalItem]) -> dict[str, float]:
        from ..metrics.accuracy import accuracy

        self.check_lengths(predictions, items)
        result = accuracy([predicted_label(p) for p in predictions], [i.meta["label"] for i in items])
        return dict(result) if isinstance(result, Mapping) else {"accuracy": float(result)}


def label_id(value: object, where: str) -> int:
    """A GLUE label (0/1/2 or entailment/neutral/contradiction) as an id; unlabelled (-1) and others are errors."""
    if isinstance(value, str) and value.strip().lower() in LABEL_NAMES:
        return LABEL_NAMES[value.strip().lower()]
    try:
        label = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        label = None
    if label not in (0, 1, 2):
        raise TaskDataError(
            f"{where}: label {value!r} is not 0/1/2 (entailment/neutral/contradiction); unlabelled rows (-1, the test "
            f"splits) cannot be trained or scored"
        )
    return label


def predicted_label(prediction: str) -> int:
    """The label id named by the first word of a generated answer, or -1 when it names none."""
    match = re.match(r"\W*(\w+)", prediction)
    if match is None:
        return -1
    word = match.group(1).lower()
    return next((i for i, w in enumerate(LABEL_WORDS) if w.lower() == word), -1)
