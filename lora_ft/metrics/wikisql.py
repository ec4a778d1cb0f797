"""WikiSQL logical-form accuracy on generated SQL text.

The model writes the dataset's ``human_readable`` form, ``SELECT {AGG} {column} FROM table WHERE {column} {OP}
{value} AND ...``. salesforce/WikiSQL's ``evaluate.py`` compares logical forms, not strings: a prediction is right
iff its select column and aggregation equal the gold ones and its conditions equal the gold conditions as a set of
(column, operator, lower-cased value). So the text is parsed back with the example's table header. Column names
and values may contain spaces, "AND" and operator symbols, so the WHERE clause is split only where a header name
followed by an operator starts (names tried longest first). When a string can be read in more than one way, it
counts as right if one of its readings is the gold logical form: such a string is then a rendering of the gold
query (the gold text itself is one). Output that cannot be read at all is wrong.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = ["AGG_OPS", "COND_OPS", "parse_sql", "gold_logical_form", "gold_sql_text", "logical_form_accuracy"]

AGG_OPS: tuple[str, ...] = ("", "MAX", "MIN", "COUNT", "SUM", "AVG")
COND_OPS: tuple[str, ...] = ("=", ">", "<", "OP")

LogicalForm = tuple[int, int, frozenset[tuple[int, int, str]]]


def _squash(text: str) -> str:
    """Whitespace as the dataset's human_readable has it (the hub builder runs ``" ".join(rep.split())``)."""
    return " ".join(str(text).split())


def _value(text: Any) -> str:
    return _squash(text).lower()


def _columns_longest_first(header: Sequence[str]) -> list[tuple[str, int]]:
    """(name, index) for every column, longest name first; a repeated name keeps all its indices."""
    named = [(_squash(name), index) for index, name in enumerate(header)]
    return sorted((pair for pair in named if pair[0]), key=lambda pair: -len(pair[0]))


# Readings kept per WHERE-clause suffix: bounds the work on degenerate output ("AND x = AND x = ...").
_MAX_READINGS = 256

_Condition = tuple[int, int, str]


def _readings(text: str, header: Sequence[str]) -> Iterator[LogicalForm]:
    """Every way ``text`` parses as a query over ``header`` (up to a bound), the preferred reading first."""
    text = _squash(text)
    if not text.startswith("SELECT "):
        return
    columns = _columns_longest_first(header)
    memo: dict[str, list[tuple[_Condition, ...]]] = {}
    for name, sel in columns:
        for agg, agg_name in enumerate(AGG_OPS):
            head = f"SELECT {agg_name} {name} FROM table" if agg_name else f"SELECT {name} FROM table"
            if not text.startswith(head):
                continue
            rest = text[len(head) :]
            if rest == "":
                yield sel, agg, frozenset()
            elif rest.startswith(" WHERE "):
                for conditions in _conditions(rest[len(" WHERE ") :], columns, memo):
                    yield sel, agg, frozenset(conditions)


def _conditions(
    text: str, columns: list[tuple[str, int]], memo: dict[str, list[tuple[_Condition, ...]]]
) -> list[tuple[_Condition, ...]]:
    """Readings of ``{column} {op} {value} AND {column} {op} {value} ...`` (the whole of ``text``)."""
    if text in memo:
        return memo[text]
    found: list[tuple[_Condition, ...]] = []
    for name, column in columns:
        for op, op_name in enumerate(COND_OPS):
            lead = f"{name} {op_name}"
            if not text.startswith(lead):
                continue
            rest = text[len(lead) :]
            if rest == "":  # an empty value at the very end ("col =" once whitespace is squashed)
                found.append(((column, op, ""),))
                continue
            if not rest.startswith(" "):
                continue
            rest = rest[1:]
            # The value runs to the end, or to an " AND " after which another condition parses.
            # Earlier splits first: more conditions is the likelier reading of an ambiguous string.
            cut = rest.find(" AND ")
            while cut >= 0 and len(found) < _MAX_READINGS:
                for tail in _conditions(rest[cut + len(" AND ") :], columns, memo):
                    found.append(((column, op, _value(rest[:cut])),) + tail)
                cut = rest.find(" AND ", cut + 1)
            found.append(((column, op, _value(rest)),))
    memo[text] = found[:_MAX_READINGS]
    return memo[text]


def parse_sql(text: str, header: list[str]) -> LogicalForm | None:
    """``(sel, agg, {(column_index, operator_index, lower-cased value), ...})`` of a generated query, or None.

    ``header`` is the example's table header. The preferred reading is returned when several exist (longest
    column names first, then the most conditions).
    """
    return next(_readings(text, header), None)


def _gold_conditions(sql: Mapping[str, Any]) -> list[tuple[int, int, Any]]:
    """Gold conditions as (column, operator, value): the hub's struct of lists, or the jsonl's list of triples."""
    conds = sql.get("conds", [])
    if isinstance(conds, Mapping):
        columns, operators, values = conds["column_index"], conds["operator_index"], conds["condition"]
        if not len(columns) == len(operators) == len(values):
            raise ValueError(f"gold conds have lists of different lengths: {conds!r}")
        return [(int(c), int(o), v) for c, o, v in zip(columns, operators, values)]
    triples = []
    for cond in conds:
        if isinstance(cond, Mapping):
            triples.append((int(cond["column_index"]), int(cond["operator_index"]), cond["condition"]))
        else:
            column, operator, value = cond
            triples.append((int(column), int(operator), value))
    return triples


def gold_logical_form(sql: Mapping[str, Any]) -> LogicalForm:
    """The gold ``(sel, agg, conditions)`` in the form :func:`parse_sql` returns."""
    try:
        conditions = frozenset((c, o, _value(v)) for c, o, v in _gold_conditions(sql))
        return int(sql["sel"]), int(sql["agg"]), conditions
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"gold sql must have sel, agg and conds {{column_index, operator_index, condition}}; got {sql!r} ({error})"
        ) from None


def gold_sql_text(header: Sequence[str], sql: Mapping[str, Any]) -> str:
    """The dataset's ``human_readable`` string for ``sql`` over ``header`` (as the hub's wikisql builder writes it)."""
    sel, agg, _ = gold_logical_form(sql)
    text = f"SELECT {AGG_OPS[agg]} {header[sel]} FROM table"
    conditions = _gold_conditions(sql)
    if conditions:
        text += " WHERE " + " AND ".join(f"{header[c]} {COND_OPS[o]} {v}" for c, o, v in conditions)
    return _squash(text)


def logical_form_accuracy(predictions: Sequence[str], gold: Sequence[Mapping[str, Any]]) -> float:
    """Logical-form accuracy × 100 of generated queries against ``gold`` ({"header": [...], "sql": {...}} each)."""
    if isinstance(predictions, str):
        raise TypeError("predictions must be a sequence of strings, not a single string")
    if len(predictions) != len(gold):
        raise ValueError(f"{len(predictions)} predictions but {len(gold)} gold examples: one query per example")
    if len(gold) == 0:
        raise ValueError("nothing to score: no predictions")
    correct = 0
    for index, (prediction, example) in enumerate(zip(predictions, gold)):
        if "header" not in example or "sql" not in example:
            raise ValueError(f"gold example {index} needs 'header' and 'sql' keys, got {sorted(example)}")
        target = gold_logical_form(example["sql"])
        if any(reading == target for reading in _readings(str(prediction), list(example["header"]))):
            correct += 1
    return 100.0 * correct / len(gold)
