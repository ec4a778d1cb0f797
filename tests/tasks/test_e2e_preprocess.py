"""The original-form -> paper-form conversion reproduces the authors' files (github microsoft/LoRA examples/NLG/data/e2e)."""

from __future__ import annotations

import csv

import pytest

from lora_ft.tasks.e2e_preprocess import convert_mr, convert_row, parse_mr, tokenize_reference


def _compare(e2e_dir, csv_name: str, txt_name: str, dialect: str) -> list[int]:
    """Indices (0-based) of rows whose conversion differs from the authors' file."""
    with open(e2e_dir / csv_name, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    lines = (e2e_dir / txt_name).read_text(encoding="utf-8").splitlines()
    assert len(rows) == len(lines)
    expected = [tuple(part.strip() for part in line.split("||")) for line in lines]
    return [i for i, (r, e) in enumerate(zip(rows, expected)) if convert_row(r["mr"], r["ref"], dialect) != e]


def test_devset_converts_to_valid_txt_row_for_row(e2e_dir):
    assert _compare(e2e_dir, "devset.csv", "valid.txt", "dev") == []  # 4,672 of 4,672


def test_testset_converts_to_test_txt_but_one_row(e2e_dir):
    # 4,692 of 4,693: row 1,492 (1-based) reads `thats` in the CSV but `that s` in the authors' file; no rule explains it.
    assert _compare(e2e_dir, "testset_w_refs.csv", "test.txt", "test") == [1491]
    line = (e2e_dir / "test.txt").read_text(encoding="utf-8").splitlines()[1491]
    assert "rating that s based" in line


def test_the_two_files_need_their_own_dialect(e2e_dir):
    assert len(_compare(e2e_dir, "devset.csv", "valid.txt", "test")) > 0
    assert len(_compare(e2e_dir, "testset_w_refs.csv", "test.txt", "dev")) > 1


@pytest.mark.parametrize(
    "text, dev, test",
    [
        ("It is family-friendly.", "It is family - friendly .", "It is family - friendly ."),
        ("Prices are £20-25.", "Prices are £ 20 - 25 .", "Prices are £ 20 - 25 ."),
        ("between £20-£25 today", "between £ 20- £ 25 today", "between £ 20-£25 today"),
        ("It isn't cheap, it's dear.", "It isn 't cheap , it 's dear .", "It is n't cheap , it 's dear ."),
        ("a 5-star place", "a 5 - star place", "a 5-star place"),
        ("called 'Aromi' here", "called ' Aromi ' here", "called ' Aromi ' here"),
        ("rated 1 out of 5. in the centre", "rated 1 out of 5. in the centre", "rated 1 out of 5 . in the centre"),
        ("costs £30.99, ok", "costs £ 30.99 , ok", "costs £ 30.99 , ok"),
        ("good ratings...but far", "good ratings ... but far", "good ratings ... but far"),
        ("friendly.. It is", "friendly .. It is", "friendly .. It is"),
        ("Rating: 5; kids: yes!", "Rating : 5 ; kids : yes !", "Rating : 5 ; kids : yes !"),
    ],
)
def test_tokenisation_rules(text, dev, test):
    assert tokenize_reference(text, "dev") == dev
    assert tokenize_reference(text, "test") == test


def test_mr_conversion_renames_slots_and_keeps_order():
    mr = "name[Blue Spice], eatType[coffee shop], priceRange[£20-25], customer rating[5 out of 5], familyFriendly[yes], near[Café Adriatic]"
    assert convert_mr(mr) == (
        "name : Blue Spice | Type : coffee shop | price : £ 20 - 25 | customer rating : 5 out of 5 | "
        "family friendly : yes | near : Café Adriatic"
    )
    assert parse_mr("name[Aromi]") == [("name", "Aromi")]


@pytest.mark.parametrize("bad", ["name Blue Spice", "name[Blue Spice], area", "", "name[Blue Spice] area[riverside]"])
def test_bad_mr_is_an_error(bad):
    with pytest.raises(ValueError, match="MR"):
        parse_mr(bad)


def test_unknown_dialect_is_an_error():
    with pytest.raises(ValueError, match="dialect"):
        tokenize_reference("x", "train")  # type: ignore[arg-type]
