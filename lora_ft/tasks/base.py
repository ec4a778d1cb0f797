"""What every task provides: examples as (context, target) text, evaluation items, scoring, and where its data comes from.

Tasks know nothing about methods or models: they produce text. `lora_ft/data.py` turns text into token ids.
Data comes from the Hugging Face hub or from local files through the same code path (`Task.rows`), so the offline
tests exercise what a real run does.
"""

from __future__ import annotations

import csv
import itertools
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..hub import hub_expected_but_unreachable, hub_offline_mode
from ..errors import UserError

if TYPE_CHECKING:
    from ..config import TaskConfig

logger = logging.getLogger("lora_ft.tasks")

SPLITS = ("train", "validation", "test")

# Local file types read through `datasets` (one loader per suffix). The released JSON form of a dataset (SAMSum's
# train.json: one array of objects) reads through the same "json" builder as JSON lines.
TABLE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
# Tab-separated files (GLUE's MNLI train.tsv / dev_matched.tsv) are read by `read_tsv` instead: their text holds bare
# quote characters, which a CSV reader (datasets, pandas) would take as quoting and so merge rows.
TSV_SUFFIX = ".tsv"


class TaskDataError(UserError, ValueError):
    """The task's data is missing or malformed; the message says where and how to fix it."""


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
    # The split that is decoded and scored when the task has no test split of its own (MNLI: validation).
    scored_split: ClassVar[str] = "test"
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
        start, end = self.row_range(split)
        examples = self.examples_from_rows(itertools.islice(self.rows(split), start, end), split)
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
            if split not in self.hub_splits:
                raise TaskDataError(f"{key} is set, but {self.split_unavailable_message(split)}")
            path = Path(value)
            if not path.is_file():
                raise TaskDataError(f"{key}: no such file {path} (working directory {Path.cwd()})")
            if path.suffix.lower() not in self.local_suffixes:
                raise TaskDataError(
                    f"{key}: {path} has type {path.suffix or '(none)'!r}; {self.name} reads {', '.join(self.local_suffixes)}"
                )

    def row_range(self, split: str) -> tuple[int, int | None]:
        """(start, end) of the file rows `split` reads: task.train_slice for training, task.eval_slice otherwise."""
        text = self.config.train_slice if split == "train" else self.config.eval_slice
        return parse_row_slice(text) if text else (0, None)

    def check_disjoint_rows(self, splits: Sequence[str]) -> None:
        """Training rows must never be scored: a scored split read from the training file needs task.train_slice and
        task.eval_slice, disjoint. (A validation split that is only a loss gets a warning instead.)"""
        train_file = self.local_file_setting("train")
        if train_file is None or self.config.source == "hub":
            return
        for split in splits:
            other = self.local_file_setting(split) if split != "train" else None
            if other is None or Path(other).resolve() != Path(train_file).resolve():
                continue
            if self.config.train_slice and self.config.eval_slice:
                (a, b), (c, d) = self.row_range("train"), self.row_range(split)
                if (b is None or c < b) and (d is None or a < d):
                    raise TaskDataError(
                        f"task.train_slice {self.config.train_slice!r} and task.eval_slice {self.config.eval_slice!r} "
                        f"overlap, and both read {train_file}: training rows would be scored; make the ranges disjoint"
                    )
                continue
            message = (
                f"task.train_file and task.{split}_file are the same file ({train_file}); set task.train_slice and "
                f"task.eval_slice to disjoint row ranges (e.g. '0:2000' and '2000:2500') so no training row is evaluated"
            )
            if split == self.scored_split:
                raise TaskDataError(message)
            logger.warning(message)

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

    def check_split(self, split: str) -> None:
        if split not in self.hub_splits:
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


def read_tsv(path: Path):
    """A tab-separated file with a header row as a `datasets.Dataset` of strings; quotes are plain characters."""
    import datasets

    # The csv module with QUOTE_NONE splits on tabs only, as GLUE's own readers do (csv.reader(..., quotechar=None)).
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if not header:
            raise TaskDataError(f"{path}: empty file; expected a header row of tab-separated column names")
        rows = []
        for number, fields in enumerate(reader, start=2):
            if not fields:
                continue
            if len(fields) != len(header):
                raise TaskDataError(
                    f"{path} line {number}: {len(fields)} tab-separated fields, but the header has {len(header)}"
                )
            rows.append(dict(zip(header, fields)))
    return datasets.Dataset.from_dict({name: [r[name] for r in rows] for name in header})


def read_table(path: Path, *, string_columns: Sequence[str] = ()):
    """A local .jsonl/.json/.csv/.parquet file as a `datasets.Dataset` (the same reader the hub path uses)."""
    import datasets

    builder = TABLE_BUILDERS[path.suffix.lower()]
    kwargs: dict[str, Any] = {}
    if builder == "csv" and string_columns:
        kwargs["converters"] = {c: str for c in string_columns}  # pandas would read "13818513" as an int
    try:
        return datasets.load_dataset(builder, data_files={"data": str(path)}, split="data", **kwargs)
    except Exception as exc:  # datasets raises many types for malformed files; all mean "this file cannot be read"
        raise TaskDataError(f"cannot read {path} as {builder}: {type(exc).__name__}: {exc}") from exc


def offline_message(task: str, hub_id: str) -> str:
    offline = " (HF_HUB_OFFLINE is set)" if hub_offline_mode() else ""
    return (
        f"cannot load the {task} dataset {hub_id!r} from the Hugging Face hub{offline}: this machine seems to be offline "
        f"or the hub is unreachable. Point task.train_file / task.validation_file / task.test_file at local files "
        f"(and set task.source to 'local' or 'auto'), or run where the hub is reachable; HF_HUB_OFFLINE may be set "
        f"to use a dataset already in the local cache."
    )


def load_hub_split(hub_id: str, config_name: str | None, revision: str | None, hub_split: str, *, task: str, split: str):
    """`datasets.load_dataset` for one split, with offline and not-found failures turned into TaskDataError."""
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    where = f"{hub_id}" + (f" (config {config_name})" if config_name else "") + (f" at revision {revision}" if revision else "")
    if hub_expected_but_unreachable():  # fail now, not after datasets' retries
        raise TaskDataError(offline_message(task, hub_id))
    try:
        return datasets.load_dataset(hub_id, config_name, revision=revision, split=hub_split)
    except DatasetNotFoundError as exc:
        raise TaskDataError(
            f"the hub has no dataset {where} (or it is private): {exc}. Check task.hub_id / task.hub_revision / "
            f"task.hub_config, or use local files (task.{split}_file)."
        ) from exc
    except (ConnectionError, TimeoutError) as exc:
        raise TaskDataError(offline_message(task, hub_id)) from exc
    except OSError as exc:  # requests/httpx connection errors are OSErrors but not ConnectionError
        raise TaskDataError(f"{offline_message(task, hub_id)} ({type(exc).__name__}: {exc})") from exc
    except ValueError as exc:  # e.g. an unknown split or config name
        raise TaskDataError(f"cannot load split {hub_split!r} of {where}: {exc}") from exc
