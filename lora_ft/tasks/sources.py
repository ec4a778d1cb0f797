"""Reading a task's raw data: local files (jsonl/json/csv/parquet through `datasets`, tab-separated files by hand) and
hub splits, with every failure turned into a one-line TaskDataError. Knows nothing of any task's columns."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

from ..errors import UserError
from ..hub import hub_expected_but_unreachable, hub_offline_mode

# Local file types read through `datasets` (one loader per suffix). The released JSON form of a dataset (SAMSum's
# train.json: one array of objects) reads through the same "json" builder as JSON lines.
TABLE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
# Tab-separated files (GLUE's MNLI train.tsv / dev_matched.tsv) are read by `read_tsv` instead: their text holds bare
# quote characters, which a CSV reader (datasets, pandas) would take as quoting and so merge rows.
TSV_SUFFIX = ".tsv"


class TaskDataError(UserError, ValueError):
    """The task's data is missing or malformed; the message says where and how to fix it."""



def read_tsv(path: Path):
    """A tab-separated file with a header row as a `datasets.Dataset` of strings; quotes are plain characters."""
    import datasets

    # The csv module with QUOTE_NONE splits on tabs only, as GLUE's own readers do (csv.reader(..., quotechar=None)).
    with path.open(encoding="utf-8-sig", newline="") as handle:  # -sig: no byte-order mark in the first column name
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
        problem = json_problem(path) if builder == "json" else None  # datasets names no line: find it
        if problem:
            raise TaskDataError(f"{path} {problem}; fix or remove that line") from exc
        raise TaskDataError(f"cannot read {path} as {builder}: {type(exc).__name__}: {exc}") from exc


def json_problem(path: Path) -> str | None:
    """Where a .json/.jsonl file stops being JSON: 'line N: not valid JSON (reason)'; None if every part parses."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return None
    if path.suffix.lower() == ".json":  # one document (SAMSum's released array), unless it is JSON lines after all
        try:
            json.loads(text)
            return None
        except json.JSONDecodeError as exc:
            if exc.msg != "Extra data" or text.lstrip().startswith("["):
                return f"line {exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})"
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError as exc:
                return f"line {number}: not valid JSON ({exc.msg}, column {exc.colno})"
    return None


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
