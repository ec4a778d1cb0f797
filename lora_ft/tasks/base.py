"""What every task provides: examples as (context, target) text, evaluation items, scoring, and where its data comes from.

Tasks know nothing about methods or models: they produce text. `lora_ft/data.py` turns text into token ids.
Data comes from the Hugging Face hub or from local files through the same code path (`Task.rows`), so the offline
tests exercise what a real run does.
"""

from __future__ import annotations

import itertools
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..hub import hub_expected_but_unreachable
from .sources import TABLE_BUILDERS, TSV_SUFFIX, TaskDataError, load_hub_split, offline_message, read_table, read_tsv

if TYPE_CHECKING:
    from ..config import TaskConfig

logger = logging.getLogger("lora_ft.tasks")

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Example:
    """One training or evaluation example as text.

    `target` is the completion exactly as it is tokenised, with its leading space (" A coffee shop ...").
    """

    context: str
    target: str
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalItem:
    """One decoding job: a context and every reference its output is scored against."""

    context: str
    references: tuple[str, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    """One raw record of a split and where it came from (for error messages: "valid.txt line 3", "train.jsonl row 7")."""

    values: Mapping[str, Any]
    where: str


class Task(ABC):
    """A task: how to read its splits, how to format an example, how to score predictions."""

    name: ClassVar[str]
    separator_eos: ClassVar[bool] = False  # EOS between context and target (E2E's format)
    metric_names: ClassVar[tuple[str, ...]]
    primary_metric: ClassVar[str]

    default_hub_id: ClassVar[str]
    default_hub_revision: ClassVar[str | None] = None
    default_hub_config: ClassVar[str | None] = None
    # Our split name -> the hub's split name. A split missing here does not exist for the task.
    hub_splits: ClassVar[Mapping[str, str]]
    # Why a split is missing, when there is more to say than "it does not exist".
    missing_split_reasons: ClassVar[Mapping[str, str]] = {}
    local_suffixes: ClassVar[tuple[str, ...]] = tuple(TABLE_BUILDERS)
    required_columns: ClassVar[tuple[str, ...]] = ()
    string_columns: ClassVar[tuple[str, ...]] = ()  # read as text even when they look like numbers (SAMSum ids)
    # Other names a column has in a dataset's other released forms (MNLI: GLUE's tsv calls the premise sentence1).
    column_aliases: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    # Whether a completion is one line (SAMSum's summary, MNLI's answer word): `end_completion` keeps its first line
    # with text (decoding does not stop at line breaks). E2E keeps the authors' rule (stop at EOS or a blank line).
    single_line: ClassVar[bool] = False
    # The real words a prefix method's virtual tokens start as, unless method.init_text says otherwise (Li & Liang:
    # task words such as "summarization" or "table-to-text:" start best); words that cue the completion keep an
    # untrained prefix run near the base model's loss. None: randomly drawn vocabulary tokens.
    prefix_init_text: ClassVar[str | None] = None
    # References file layout: groups separated by blank lines (E2E's official scorer) or one reference per line.
    grouped_references: ClassVar[bool] = False

    def __init__(self, config: TaskConfig):
        if config.name != self.name:
            raise TaskDataError(f"{type(self).__name__} got a config for task {config.name!r}; use get_task(config)")
        self.config = config

    # ---- the interface other modules call -------------------------------------------------------------------------

    def load(self, split: str) -> list[Example]:
        """The examples of `split` ("train" | "validation" | "test"), limited by task.max_train/eval_examples."""
        self.check_split(split)
        examples = self.examples_from_rows(self.sliced_rows(split), split)
        if not examples:
            raise TaskDataError(f"{self.name} {split}: no examples were read from {self.describe_source(split)}")
        return self.limit(examples, split)

    def eval_items(self, examples: Sequence[Example]) -> list[EvalItem]:
        """One decoding job per example, scored against its own target (E2E overrides this to group by MR)."""
        return [EvalItem(e.context, (e.target.strip(),), e.meta) for e in examples]

    def end_completion(self, text: str) -> str:
        """Where a generated completion ends: for single-line tasks, the first line with text (leading blank lines
        skipped: the format's "\n\n" is already in the prompt; the model may go on to write the dialogue's next turn
        after it); otherwise the text as decoded."""
        if self.single_line:
            text = text.strip().splitlines()[0] if text.strip() else ""
        return text.strip()

    @abstractmethod
    def score(self, predictions: Sequence[str], items: Sequence[EvalItem]) -> dict[str, float]:
        """Metric name -> value for the predictions of `items`, in order."""

    def check_source(self, splits: Sequence[str] = ()) -> None:
        """Cheap pre-flight, before any model loads: local files exist and have a readable type, splits exist.

        `splits` (optional) are the splits the caller will load: each must exist for the task and, with
        task.source 'local', have its file set; one that would come from the hub needs the hub reachable (a TCP
        probe of milliseconds, no download). Raises TaskDataError.
        """
        cfg = self.config
        for split in splits:
            self.check_split(split)
            if cfg.source == "local" and self.local_file_setting(split) is None:
                raise TaskDataError(self.local_file_missing_message(split))
            from_hub = cfg.source == "hub" or self.local_file_setting(split) is None
            if from_hub and hub_expected_but_unreachable():
                hub_id = cfg.hub_id or self.default_hub_id
                raise TaskDataError(f"{split} split: {offline_message(self.name, hub_id)}")
        self.check_disjoint_rows(splits)
        files = {split: self.local_file_setting(split) for split in SPLITS}
        if cfg.source == "local" and not any(files.values()):
            raise TaskDataError(
                f"task.source is 'local' but none of task.train_file, task.validation_file, task.test_file is set; "
                f"set them to local {self.name} files ({', '.join(self.local_suffixes)})"
            )
        if cfg.source == "hub" and any(files.values()):
            logger.warning("task.source is 'hub': the local files in task.*_file are ignored")
            return
        for split, value in files.items():
            if value is None:
                continue
            key = f"task.{split}_file"
            if not self.has_split(split):
                raise TaskDataError(f"{key} is set, but {self.split_unavailable_message(split)}")
            path = Path(value)
            if not path.is_file():
                raise TaskDataError(f"{key}: no such file {path} (working directory {Path.cwd()})")
            if path.suffix.lower() not in self.local_suffixes:
                raise TaskDataError(
                    f"{key}: {path} has type {path.suffix or '(none)'!r}; {self.name} reads {', '.join(self.local_suffixes)}"
                )

    def row_range(self, split: str) -> tuple[int, int | None]:
        """(start, end) of the rows `split` reads: task.train_slice, task.validation_slice or task.test_slice (the
        last two default to task.eval_slice). Rows are file rows, except where a task counts them otherwise (E2E: MRs)."""
        text = self.slice_setting(split)[1]
        return parse_row_slice(text) if text else (0, None)

    def slice_setting(self, split: str) -> tuple[str, str | None]:
        """The config key that slices `split` and its value ('task.eval_slice' when only that is set)."""
        cfg = self.config
        if split == "train":
            return "task.train_slice", cfg.train_slice
        own = getattr(cfg, f"{split}_slice", None)
        if own is None and cfg.eval_slice is not None:
            return "task.eval_slice", cfg.eval_slice
        return f"task.{split}_slice", own

    def sliced_rows(self, split: str) -> Iterable[Row]:
        """The rows of `split` within its slice (E2E overrides this to cut between MRs)."""
        start, end = self.row_range(split)
        return itertools.islice(self.rows(split), start, end)

    def split_source(self, split: str) -> tuple[str, ...]:
        """What `split` is read from: a local file's resolved path, or the hub dataset and split. Two splits with
        the same source share rows unless their slices are disjoint."""
        value = self.local_file_setting(split)
        if value is not None and self.config.source != "hub":
            return ("file", str(Path(value).resolve()))
        return ("hub", self.hub_id(), self.config.hub_config or "", self.hub_splits.get(split, split))

    def overlap_problem(self, split: str, other: str) -> str | None:
        """Why `split` and `other` share rows (one line, with the fix), or None when they share none."""
        if self.split_source(split) != self.split_source(other):
            return None
        (a, b), (c, d) = self.row_range(split), self.row_range(other)
        if (b is not None and c >= b) or (d is not None and a >= d):
            return None
        where = self.split_source(split)[1] if self.split_source(split)[0] == "file" else (
            f"the hub split {self.split_source(split)[-1]!r} of {self.hub_id()}")
        (key1, value1), (key2, value2) = self.slice_setting(split), self.slice_setting(other)
        if split == other:
            return f"the {split} split is read twice from {where}"
        if value1 is None and value2 is None:
            return (f"the {split} and {other} splits both read all of {where}; set {key1} and {key2} to disjoint "
                    f"ranges (e.g. '0:2000' and '2000:2500')")
        shown = [f"{key} {value!r}" if value else f"{key} (unset: every row)" for key, value in ((key1, value1), (key2, value2))]
        return f"{shown[0]} and {shown[1]} overlap, and both read {where}; make the ranges disjoint"

    def check_split_roles(self, scored_split: str) -> None:
        """Training, selection (the validation split: its loss, --epochs best) and scored rows must not overlap: a
        model must never be scored, or chosen, on rows it trained on, nor chosen on the rows it is scored on (unless
        task.select_on_scored_split allows the latter, the paper's dev-set protocol). Reads no data; runs at
        `config validate` and before `train` loads anything. Raises TaskDataError."""
        self.check_split(scored_split)
        for split in dict.fromkeys(("validation", scored_split)):
            problem = self.overlap_problem("train", split)
            if problem:
                use = "scored" if split == scored_split else "used for selection"
                raise TaskDataError(f"training rows would be {use}: {problem}")
        if self.config.select_on_scored_split:
            return
        problem = self.overlap_problem("validation", scored_split)
        if problem or scored_split == "validation":
            why = problem if scored_split != "validation" else (
                "decoding.split is 'validation', the split whose loss selects epochs")
            raise TaskDataError(
                f"the selection (validation) split overlaps the scored split ({scored_split}): {why}; keep them "
                "disjoint, or set task.select_on_scored_split: true to select on the scored rows as the paper's "
                "dev-set scores did"
            )

    def check_disjoint_rows(self, splits: Sequence[str]) -> None:
        """Training rows must never be evaluated: each split in `splits` (other than train) must share none of them."""
        for split in splits:
            if split == "train":
                continue
            problem = self.overlap_problem("train", split)
            if problem:
                raise TaskDataError(f"training rows would be evaluated: {problem}")

    # ---- what each task defines ----------------------------------------------------------------------------------

    @abstractmethod
    def example_from_row(self, row: Row, split: str) -> Example | None:
        """Format one raw row (columns as on the hub). None skips the row (logged by the caller)."""

    # ---- shared machinery ----------------------------------------------------------------------------------------

    def examples_from_rows(self, rows: Iterable[Row], split: str) -> list[Example]:
        examples, skipped = [], []
        for row in rows:
            example = self.example_from_row(row, split)
            if example is None:
                skipped.append(row.where)
            else:
                examples.append(example)
        if skipped:
            logger.warning("%s %s: skipped %d empty rows (first: %s)", self.name, split, len(skipped), ", ".join(skipped[:3]))
        return examples

    def limit(self, examples: list[Example], split: str) -> list[Example]:
        """The first task.max_train_examples (train) or task.max_eval_examples (other splits) examples."""
        n = self.config.max_train_examples if split == "train" else self.config.max_eval_examples
        return examples if n is None else examples[:n]

    def has_split(self, split: str) -> bool:
        return split in self.hub_splits

    def check_split(self, split: str) -> None:
        if not self.has_split(split):
            raise TaskDataError(self.split_unavailable_message(split))

    def split_unavailable_message(self, split: str) -> str:
        reason = self.missing_split_reasons.get(split, "")
        return (
            f"the {self.name} task has no {split!r} split{': ' + reason if reason else ''}; "
            f"available: {', '.join(self.hub_splits)}"
        )

    def local_file_setting(self, split: str) -> str | None:
        return getattr(self.config, f"{split}_file", None) if split in SPLITS else None

    def local_file(self, split: str) -> Path | None:
        """The local file `split` is read from, or None for the hub (task.source decides)."""
        value = self.local_file_setting(split)
        if self.config.source == "hub":
            return None
        if value is None:
            if self.config.source == "local":
                raise TaskDataError(self.local_file_missing_message(split))
            return None
        path = Path(value)
        if not path.is_file():
            raise TaskDataError(f"task.{split}_file: no such file {path} (working directory {Path.cwd()})")
        return path

    def local_file_missing_message(self, split: str) -> str:
        return (
            f"task.source is 'local' but task.{split}_file is not set; point it at a local {self.name} "
            f"{split} file ({', '.join(self.local_suffixes)}) or set task.source to 'auto' or 'hub'"
        )

    def describe_source(self, split: str) -> str:
        path = self.local_file(split)
        return str(path) if path else f"the hub dataset {self.hub_id()}"

    def rows(self, split: str) -> Iterable[Row]:
        """The raw rows of `split`, from the local file if there is one, else from the hub."""
        path = self.local_file(split)
        if path is None:
            return self.hub_rows(split)
        return self.local_rows(path, split)

    def local_rows(self, path: Path, split: str) -> Iterable[Row]:
        """Rows of a local .jsonl/.json/.csv/.parquet file, with the hub's column names."""
        suffix = path.suffix.lower()
        if suffix not in self.local_suffixes:
            raise TaskDataError(
                f"task.{split}_file: {path} has type {suffix or '(none)'!r}; {self.name} reads {', '.join(self.local_suffixes)}"
            )
        dataset = read_tsv(path) if suffix == TSV_SUFFIX else read_table(path, string_columns=self.string_columns)
        columns = self.canonical_columns(dataset.column_names)
        self.check_columns(list(columns.values()), str(path))
        return (
            Row({columns.get(k, k): v for k, v in values.items()}, f"{path.name} row {i + 1}")
            for i, values in enumerate(dataset)
        )

    def canonical_columns(self, columns: Sequence[str]) -> dict[str, str]:
        """Column name in the file -> the hub's name, for files in another released form (`column_aliases`)."""
        renamed = {}
        for name, aliases in self.column_aliases.items():
            if name in columns:
                continue
            found = next((a for a in aliases if a in columns), None)
            if found is not None:
                renamed[found] = name
        return {c: renamed.get(c, c) for c in columns}

    def hub_id(self) -> str:
        return self.config.hub_id or self.default_hub_id

    def hub_rows(self, split: str) -> Iterable[Row]:
        hub_id = self.hub_id()
        # The default revision and config belong to the default dataset; another hub id gets its own defaults.
        is_default = hub_id == self.default_hub_id
        revision = self.config.hub_revision or (self.default_hub_revision if is_default else None)
        config_name = self.config.hub_config or (self.default_hub_config if is_default else None)
        dataset = load_hub_split(hub_id, config_name, revision, self.hub_splits[split], task=self.name, split=split)
        self.check_columns(dataset.column_names, f"hub dataset {hub_id}")
        return (Row(values, f"{hub_id} {self.hub_splits[split]} row {i + 1}") for i, values in enumerate(dataset))

    def check_columns(self, columns: Sequence[str], origin: str) -> None:
        missing = [c for c in self.required_columns if c not in columns]
        if missing:
            raise TaskDataError(
                f"{origin}: missing column(s) {', '.join(missing)} (found: {', '.join(columns)}); "
                f"{self.name} files use the hub's column names: {', '.join(self.required_columns)}"
            )

    @staticmethod
    def check_lengths(predictions: Sequence[str], items: Sequence[EvalItem]) -> None:
        if len(predictions) != len(items):
            raise ValueError(f"{len(predictions)} predictions for {len(items)} evaluation items; they must match one to one")


def parse_row_slice(text: str) -> tuple[int, int | None]:
    """'START:END' (0-based file rows, END excluded, either may be empty) -> (start, end); ConfigError-style message."""
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start = int(parts[0]) if parts[0].strip() else 0
        end = int(parts[1]) if parts[1].strip() else None
    except ValueError:
        raise TaskDataError(f"row slice {text!r} is not 'START:END' (e.g. '0:2000', '2000:', ':500')") from None
    if start < 0 or (end is not None and end <= start):
        raise TaskDataError(f"row slice {text!r}: need 0 <= START < END")
    return start, end
