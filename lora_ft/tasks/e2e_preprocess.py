"""Convert E2E NLG data from its original form to the prefix-tuning preprocessing the LoRA paper trained and scored on.

Original (github tuetschek/e2e-dataset, hub `tuetschek/e2e_nlg`):
    MR   `name[Blue Spice], eatType[coffee shop], area[city centre]`
    ref  `A coffee shop in the city centre area called Blue Spice.`
Paper (XiangLi1999/PrefixTuning `src1_*.txt`, microsoft/LoRA `examples/NLG/data/e2e/*.txt`):
    MR   `name : Blue Spice | Type : coffee shop | area : city centre`
    ref  `A coffee shop in the city centre area called Blue Spice .`

The authors' files were made by a tokenizer whose code is not published, and the validation and test files were clearly
tokenised differently (the test file splits contractions the Penn Treebank way, `is n't`; the validation file splits
before the apostrophe, `isn 't`; hyphens and `£` also differ). The rules below were derived from the data, one dialect per
file: converting `devset.csv` gives `valid.txt` row for row (4,672 of 4,672), and converting `testset_w_refs.csv` gives
`test.txt` for 4,692 of 4,693 rows. The one row that differs (test row 1,492, 1-based) has `thats` in the CSV and
`that s` in the authors' file; no rule explains it, so it is left as is.

The training split's file is not available offline; it came from the same release as the development set (the test set
was published a year later), so it is converted with the "dev" dialect. That choice is an inference, not a measurement.

No library does this: nltk's Treebank tokenizer keeps `family-friendly` and `£20` whole and splits only a sentence-final
period, so it matches fewer than 40% of the rows.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal

Dialect = Literal["dev", "test"]

# Which tokenisation rules reproduce the authors' file for each split (see the module docstring).
DIALECT_FOR_SPLIT: dict[str, Dialect] = {"train": "dev", "validation": "dev", "test": "test"}

# Slot names the prefix-tuning preprocessing renamed; the others (name, food, customer rating, area, near) are kept.
SLOT_RENAMES = {"eatType": "Type", "priceRange": "price", "familyFriendly": "family friendly"}

_SLOT = re.compile(r"\s*([^\[\],]+?)\s*\[([^\]]*)\]\s*(,|$)")

# A period that ends a sentence or a clause: one or two periods (".." is kept as one token) not preceded by another
# period, followed by whitespace, a closing quote or bracket, or a comma. A period before a letter or digit stays
# (`30.99`, `food .price` in the source stays `.price`).
_FINAL_PERIODS = re.compile(r"(?<!\.)(\.{1,2})(?=[\s\"'),])")
# The dev file keeps the period of a bare number before a lowercase word (`1 out of 5. in the city centre`), as nltk's
# Punkt sentence splitter does for numbers followed by a word it does not expect to start a sentence.
_NUMBER_PERIOD_BEFORE_LOWERCASE = re.compile(r"(?<=\s)(\d+)\.(?=\s+[a-z])")
_KEEP = "\x00"  # placeholder for a protected period; never occurs in the data


def tokenize_reference(text: str, dialect: Dialect = "dev") -> str:
    """Tokenise an E2E text (a reference or an MR value) as the authors' files are: tokens joined by single spaces.

    `dialect` "dev" reproduces valid.txt (and is assumed for train.txt), "test" reproduces test.txt.
    """
    if dialect not in ("dev", "test"):
        raise ValueError(f"unknown E2E tokenisation dialect {dialect!r}; expected 'dev' or 'test'")
    s = f" {text} "
    s = re.sub(r"\.{3,}", r" \g<0> ", s)  # an ellipsis is one token, even before a word (`ratings...but`)
    if dialect == "dev":
        s = _NUMBER_PERIOD_BEFORE_LOWERCASE.sub(rf"\1{_KEEP}", s)
    s = _FINAL_PERIODS.sub(r" \1 ", s)
    s = s.replace(_KEEP, ".")
    s = re.sub(r"([,;:!?\"()$])", r" \1 ", s)
    if dialect == "dev":
        s = s.replace("£", " £ ")  # `£20-£25` -> `£ 20- £ 25`
        s = re.sub(r"(?<=[^\W_])-(?=[^\W_])", " - ", s)  # between letters or digits: `family - friendly`, `20 - 25`
    else:
        s = re.sub(r"(?<=\s)£", "£ ", s)  # only at the start of a token: `£20-£25` -> `£ 20-£25`
        s = re.sub(r"(?<=[^\W\d_])-(?=[^\W\d_])", " - ", s)  # between letters: `family - friendly`, but `5-star`
        s = re.sub(r"(?<=\d)-(?=\d)", " - ", s)  # between digits: `20 - 25`
    s = re.sub(r"(\s)'(\w)", r"\1' \2", s)  # opening single quote: `'Aromi'` -> `' Aromi '`
    s = re.sub(r"(\w)'(\s)", r"\1 '\2", s)  # closing single quote
    if dialect == "dev":
        s = re.sub(r"(\w)'(\w)", r"\1 '\2", s)  # `isn 't`, `it 's`
    else:
        s = re.sub(r"(\w)n't\b", r"\1 n't", s)  # Penn Treebank: `is n't`, `ca n't`
        s = re.sub(r"(\w)'(s|re|ll|ve|m|d)\b", r"\1 '\2", s, flags=re.IGNORECASE)
    return " ".join(s.split())


def parse_mr(mr: str) -> list[tuple[str, str]]:
    """Split an original-form MR `name[Blue Spice], eatType[coffee shop]` into (slot, value) pairs, in order.

    Raises ValueError naming the unparsable part.
    """
    slots: list[tuple[str, str]] = []
    pos = 0
    text = mr.strip()
    while pos < len(text):
        match = _SLOT.match(text, pos)
        if match is None:
            raise ValueError(f"cannot parse the MR {mr!r} at {text[pos:]!r}; expected slot[value] pairs separated by commas")
        slots.append((match.group(1), match.group(2).strip()))
        pos = match.end()
    if not slots:
        raise ValueError(f"the MR {mr!r} has no slot[value] pairs")
    return slots


@lru_cache(maxsize=65536)  # each MR repeats for all of its references (42,061 training rows, about 4,900 MRs)
def convert_mr(mr: str, dialect: Dialect = "dev") -> str:
    """`name[Blue Spice], eatType[coffee shop]` -> `name : Blue Spice | Type : coffee shop` (slot order kept)."""
    return " | ".join(
        f"{SLOT_RENAMES.get(slot, slot)} : {tokenize_reference(value, dialect)}" for slot, value in parse_mr(mr)
    )


def convert_row(mr: str, reference: str, dialect: Dialect = "dev") -> tuple[str, str]:
    """One original-form (MR, reference) pair in the paper's form, without the trailing space the authors' files carry."""
    return convert_mr(mr, dialect), tokenize_reference(reference, dialect)
