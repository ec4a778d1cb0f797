"""WikiSQL logical-form accuracy on generated SQL text."""

from __future__ import annotations

import pytest

from lora_ft.metrics.wikisql import gold_sql_text, logical_form_accuracy, parse_sql

# The first WikiSQL training example as the hub serves it (header, sql, human_readable).
FIRST_HEADER = ["State/territory", "Text/background colour", "Format", "Current slogan", "Current series", "Notes"]
FIRST_SQL = {
    "human_readable": "SELECT Notes FROM table WHERE Current slogan = SOUTH AUSTRALIA",
    "sel": 5,
    "agg": 0,
    "conds": {"column_index": [3], "operator_index": [0], "condition": ["SOUTH AUSTRALIA"]},
}

# A hand-made table whose names contain spaces, "AND" and operator symbols.
HEADER = ["Player", "No.", "Rock AND Roll", "Score > Par", "Date = Day", "Team"]
SQL = {
    "sel": 0,
    "agg": 3,  # COUNT
    "conds": {
        "column_index": [2, 3, 5],
        "operator_index": [0, 1, 0],
        "condition": ["Bill AND Ted", "5", "Rams < Jets"],
    },
}
GOLD = [{"header": HEADER, "sql": SQL}]


def test_gold_text_as_the_dataset_writes_it() -> None:
    assert gold_sql_text(FIRST_HEADER, FIRST_SQL) == FIRST_SQL["human_readable"]
    assert gold_sql_text(HEADER, SQL) == (
        "SELECT COUNT Player FROM table WHERE Rock AND Roll = Bill AND Ted AND Score > Par > 5 AND Team = Rams < Jets"
    )
    # conds as the original jsonl's [column, operator, value] triples, and no AGG (no double space)
    sql = {"sel": 1, "agg": 0, "conds": [[0, 0, "Vince  Carter"]]}
    assert gold_sql_text(HEADER, sql) == "SELECT No. FROM table WHERE Player = Vince Carter"


def test_parse_with_tricky_names_and_values() -> None:
    parsed = parse_sql(gold_sql_text(HEADER, SQL), HEADER)
    assert parsed == (0, 3, frozenset({(2, 0, "bill and ted"), (3, 1, "5"), (5, 0, "rams < jets")}))
    assert parse_sql("SELECT MAX Score > Par FROM table", HEADER) == (3, 1, frozenset())
    assert parse_sql("SELECT Date = Day FROM table WHERE Date = Day = Monday", HEADER) == (
        4, 0, frozenset({(4, 0, "monday")})
    )


def test_exact_gold_text_is_correct() -> None:
    assert logical_form_accuracy([gold_sql_text(HEADER, SQL)], GOLD) == 100.0
    assert logical_form_accuracy([FIRST_SQL["human_readable"]], [{"header": FIRST_HEADER, "sql": FIRST_SQL}]) == 100.0


def test_conditions_are_a_set_and_values_case_insensitive() -> None:
    reordered = (
        "SELECT COUNT Player FROM table WHERE Team = RAMS < JETS AND Score > Par > 5 AND Rock AND Roll = bill and ted"
    )
    assert logical_form_accuracy([reordered], GOLD) == 100.0


def test_wrong_parts_are_wrong() -> None:
    where = "WHERE Rock AND Roll = Bill AND Ted AND Score > Par"
    wrong = [
        f"SELECT Player FROM table {where} > 5 AND Team = Rams < Jets",  # aggregation
        f"SELECT COUNT Team FROM table {where} > 5 AND Team = Rams < Jets",  # select column
        f"SELECT COUNT Player FROM table {where} < 5 AND Team = Rams < Jets",  # operator
        f"SELECT COUNT Player FROM table {where} > 5",  # a condition missing
        f"SELECT COUNT Player FROM table {where} > 6 AND Team = Rams < Jets",  # value
    ]
    assert logical_form_accuracy(wrong, GOLD * len(wrong)) == 0.0


def test_unparseable_output_counts_wrong() -> None:
    garbage = [
        "",
        "Player",
        "SELECT Coach FROM table",
        "SELECT COUNT Player FROM tables",
        "select count player from table",
    ]
    for text in garbage:
        assert parse_sql(text, HEADER) is None, text
    assert logical_form_accuracy(garbage + [gold_sql_text(HEADER, SQL)], GOLD * 6) == pytest.approx(100 / 6)


def test_degenerate_output_stays_fast() -> None:
    text = "SELECT Player FROM table WHERE " + " AND ".join(["Team = x"] * 60)
    assert parse_sql(text, HEADER) is not None
    assert logical_form_accuracy([text], GOLD) == 0.0


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 gold"):
        logical_form_accuracy(["a", "b"], GOLD)
    with pytest.raises(ValueError, match="'header' and 'sql'"):
        logical_form_accuracy(["a"], [{"sql": SQL}])
