"""WikiSQL (stand-in for the paper's GPT-3 Table 4): natural-language question + table schema -> SQL.

Rows as on the hub (`Salesforce/wikisql`, revision refs/convert/parquet): `question`; `table` {`header`, ...};
`sql` {`human_readable`, `sel`, `agg`, `conds` {`column_index`, `operator_index`, `condition`}}. Local files must keep
that nesting, so .jsonl/.json/.parquet only (CSV has no nested columns).

Format: context "Table: {header joined by ' | '}\\nQuestion: {question}\\nSQL:", target " {human_readable}".
Score: logical-form accuracy as the official evaluate.py computes it (`lora_ft.metrics.wikisql`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .base import EvalItem, Example, Row, Task, TaskDataError


class WikiSQLTask(Task):
    name = "wikisql"
    metric_names = ("lf_accuracy",)
    primary_metric = "lf_accuracy"
    default_hub_id = "Salesforce/wikisql"
    default_hub_revision = "refs/convert/parquet"
    hub_splits = {"train": "train", "validation": "validation", "test": "test"}
    local_suffixes = (".jsonl", ".json", ".parquet")
    required_columns = ("question", "table", "sql")

    def example_from_row(self, row: Row, split: str) -> Example:
        values = row.values
        table, sql = values["table"], values["sql"]
        if not isinstance(table, Mapping) or not table.get("header"):
            raise TaskDataError(f"{row.where}: `table` must be an object with a non-empty `header` list, got {table!r}")
        if not isinstance(sql, Mapping) or not isinstance(sql.get("human_readable"), str):
            raise TaskDataError(f"{row.where}: `sql` must be an object with a `human_readable` string, got {sql!r}")
        question = values["question"]
        if not isinstance(question, str) or not question.strip():
            raise TaskDataError(f"{row.where}: empty question")
        header = [str(h) for h in table["header"]]
        context = f"Table: {' | '.join(header)}\nQuestion: {question.strip()}\nSQL:"
        return Example(context, " " + sql["human_readable"].strip(), {"header": header, "sql": _plain(sql)})

    def score(self, predictions: Sequence[str], items: Sequence[EvalItem]) -> dict[str, float]:
        from ..metrics.wikisql import logical_form_accuracy

        self.check_lengths(predictions, items)
        result = logical_form_accuracy(list(predictions), [{"header": i.meta["header"], "sql": i.meta["sql"]} for i in items])
        return dict(result) if isinstance(result, Mapping) else {"lf_accuracy": float(result)}


def _plain(value: Any) -> Any:
    """Nested rows as plain dicts and lists (parquet rows may carry numpy or pyarrow types)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value
