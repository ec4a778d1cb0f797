"""The pure-Python PTB tokenizer against Stanford PTBTokenizer 3.4.1 (the jar the COCO scorer calls).

The expected token strings below were produced by that jar (``java -cp stanford-corenlp-3.4.1.jar
edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase``), not by the port; with Java present, the port is
also compared with pycocoevalcap's own PTBTokenizer wrapper on all E2E test references.
"""

from __future__ import annotations

import os
import random
import shutil
import string
from pathlib import Path

import pytest

from lora_ft.metrics.ptb_tokenizer import (
    PUNCTUATIONS,
    coco_tokenize,
    coco_tokenize_all,
    coco_tokenize_batch,
    ptb_tokenize,
)


def lower_tokens(text: str, following: str | None = None) -> str:
    return " ".join(t.lower() for t in ptb_tokenize(text, following))


# (input line, the jar's output for it with -lowerCase; each line alone in its file)
JAR_CASES = [
    # punctuation
    ("Alimentum,Italian;cheap:yes.Great!Okay?Sure.", "alimentum , italian ; cheap : yes.great!okay?sure ."),
    ("Wait... what?! Yes!! 1,000 people at 3.5 stars.", "wait ... what ?! yes !! 1,000 people at 3.5 stars ."),
    (
        "(Hello) [world] {braces} \"quoted\" 'single'",
        "-lrb- hello -rrb- -lsb- world -rsb- -lcb- braces -rcb- `` quoted '' ` single '",
    ),
    # currency and ranges: the pound sign becomes "#", ranges written without spaces stay one token
    ("It costs £20-25 and it's £ 20 - 25 per person.", "it costs # 20-25 and it 's # 20 - 25 per person ."),
    ("Prices range £20 - £25, €30, $5.50 and 20£.", "prices range # 20 - # 25 , $ 30 , $ 5.50 and 20 # ."),
    ("price range £ 20 - 25 .", "price range # 20 - 25 ."),
    # apostrophes and contractions
    (
        "I can't, won't, don't; we'll, they've, she'd, I'm, you're, it's, James' and dogs' toys.",
        "i ca n't , wo n't , do n't ; we 'll , they 've , she 'd , i 'm , you 're , it 's , james ' and dogs ' toys .",
    ),
    ("CANNOT gonna gotta wanna lemme 'tis 'twas d'ye", "can not gon na got ta wan na lem me 't is 't was d'ye"),
    ("O'Brien's café rock'n'roll y'all ma'am o'clock 'em", "o'brien 's café rock 'n' roll y' all ma'am o'clock 'em"),
    ("The Eagle's \"family-friendly\" rating: 5 out of 5.", "the eagle 's `` family-friendly '' rating : 5 out of 5 ."),
    # hyphens
    (
        "A family-friendly, kid-friendly place -- non-family-friendly and family - friendly.",
        "a family-friendly , kid-friendly place -- non-family-friendly and family - friendly .",
    ),
    ("3-4 3-star -5 5-- -- -5- 3/4/2015 12/25 5.5.", "3-4 3-star -5 5 -- -- -5 - 3/4/2015 12/25 5.5 ."),
    ("x-ray - - -- --- ... .... ..", "x-ray - - -- -- ... ... . ."),
    # abbreviations and acronyms
    ("Mr. Smith lives in the U.S. He likes the U.S.", "mr. smith lives in the u.s. . he likes the u.s."),
    ("It is 5 p.m. now. The Co. Inc. is here. See No. 5.", "it is 5 p.m. now . the co. . inc. is here . see no. 5 ."),
    ("Near Crowne Plaza Hotel family friendly no.", "near crowne plaza hotel family friendly no ."),
]


@pytest.mark.parametrize(("text", "expected"), JAR_CASES)
def test_matches_stanford_tokenizer_output(text: str, expected: str) -> None:
    assert lower_tokens(text) == expected


def test_next_line_is_right_context() -> None:
    # "w." then a line starting "The": the jar reads the single letter as a sentence end (jar output: "w .").
    assert lower_tokens("w. ", "The Eagle") == "w ."
    assert lower_tokens("w. ", "the Eagle") == "w."
    assert lower_tokens("the U.S. ", "It said") == "the u.s. ."
    # As one batch, each caption sees the next one, as in the COCO wrapper's single file.
    assert coco_tokenize_batch(["Go to the U.S.", "It is nice."]) == ["go to the u.s.", "it is nice"]


def test_coco_filter_drops_punctuation_and_lowercases() -> None:
    assert coco_tokenize("The Eagle (a pub) is family-friendly, isn't it?") == (
        "the eagle -lrb- a pub -rrb- is family-friendly is n't it"
    )  # the jar lower-cases -LRB- to -lrb-, which the case-sensitive COCO filter keeps
    assert coco_tokenize("") == ""
    assert {"''", "``", "--", "..."} <= PUNCTUATIONS


def test_all_captions_of_an_id_stay_together() -> None:
    out = coco_tokenize_all({"a": ["One.", "Two!"], "b": ["Three?"]})
    assert out == {"a": ["one", "two"], "b": ["three"]}


def test_first_character_shortcuts_change_nothing() -> None:
    # Random character soup, seeded: the scan that tries every rule must agree with the shortcut scan.
    rng = random.Random(1234)
    alphabet = string.ascii_letters + string.digits + string.punctuation + "    £€’“”–—…é"
    words = ["family", "friendly", "U.S.", "Mr.", "etc.", "it's", "£20-25", "www.x.com", "a@b.com", "cannot"]
    for _ in range(300):
        parts = [rng.choice(words) if rng.random() < 0.4 else "".join(rng.choices(alphabet, k=rng.randint(1, 5)))
                 for _ in range(rng.randint(1, 10))]
        line = rng.choice(["", " "]).join(parts)
        assert ptb_tokenize(line) == ptb_tokenize(line, _all_rules=True), line


@pytest.mark.skipif(shutil.which("java") is None, reason="needs Java to run the Stanford tokenizer jar")
def test_same_as_pycocoevalcap_wrapper_on_e2e_references(
    e2e_test_set: tuple[list[str], list[list[str]]], e2e_example: tuple[list[str], list[list[str]]]
) -> None:
    """All 4,693 E2E test references plus the scorer example, through the COCO wrapper itself (Java)."""
    from pycocoevalcap.tokenizer import ptbtokenizer

    if not os.access(Path(ptbtokenizer.__file__).parent, os.W_OK):
        pytest.skip("the COCO wrapper writes its temporary file next to its jar, and that folder is read-only")

    example_outputs, example_refs = e2e_example
    groups = e2e_test_set[1] + example_refs + [example_outputs] + [[text for text, _ in JAR_CASES]]
    captions = {f"inst-{i}": [{"caption": ref} for ref in refs] for i, refs in enumerate(groups)}
    expected = ptbtokenizer.PTBTokenizer().tokenize(captions)
    ours = coco_tokenize_all({key: [c["caption"] for c in caps] for key, caps in captions.items()})
    assert sum(len(v) for v in expected.values()) == sum(len(refs) for refs in groups)
    mismatches = [(key, a, b) for key in expected for a, b in zip(expected[key], ours[key]) if a != b]
    assert mismatches == []
