"""E2E NLG (GPT-2, paper Table 3): restaurant meaning representations to text.

Sources, one code path (`E2ETask.rows` yields (MR, reference) rows, `example_from_row` formats them):
- the authors' files (`MR||reference` per line, already in the paper's form; github microsoft/LoRA examples/NLG/data/e2e);
- the hub dataset `tuetschek/e2e_nlg` (revision refs/convert/parquet), or a local .csv/.jsonl/.json/.parquet copy of it,
  in the original form (columns meaning_representation + human_reference, or the E2E release's mr + ref).
  With task.e2e_form = "paper" (default) these rows are converted to the paper's form (`e2e_preprocess.py`).

Example: context "name : Blue Spice | Type : coffee shop | area : city centre",
target " A coffee shop in the city centre area called Blue Spice ." (leading space, no trailing one), with EOS between
them (`separator_eos`). Scoring decodes once per distinct MR and scores against all of its references.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from .base import EvalItem, Example, Row, Task, TaskDataError
from .e2e_preprocess import DIALECT_FOR_SPLIT, convert_row

# Column names of an original-form table: the hub's, and the E2E release's CSVs (devset.csv, testset_w_refs.csv).
ORIGINAL_COLUMNS = (("meaning_representation", "human_reference"), ("mr", "ref"))


class E2ETask(Task):
    name = "e2e"
    separator_eos = True
    prefix_init_text = " table-to-text:"  # Li & Liang's own init words for E2E
    grouped_references = True  # the official scorer's layout: an MR's references together, groups split by a blank line
    metric_names = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")
    primary_metric = "BLEU"
    default_hub_id = "tuetschek/e2e_nlg"
    default_hub_revision = "refs/convert/parquet"
    hub_splits = {"train": "train", "validation": "validation", "test": "test"}
    local_suffixes = (".txt", ".jsonl", ".json", ".csv", ".parquet")

    def check_source(self, splits: Sequence[str] = ()) -> None:
        super().check_source(splits)
        if self.config.e2e_form not in ("paper", "original"):
            raise TaskDataError(f"task.e2e_form must be 'paper' or 'original', got {self.config.e2e_form!r}")
        if self.config.e2e_form == "original" and self.config.source != "hub":
            for split in self.hub_splits:
                value = self.local_file_setting(split)
                if value and Path(value).suffix.lower() == ".txt":
                    raise TaskDataError(self._txt_is_paper_form(split, Path(value)))

    # ---- reading ---------------------------------------------------------------------------------------------------

    def rows(self, split: str) -> Iterable[Row]:
        path = self.local_file(split)
        if path is not None and path.suffix.lower() == ".txt":
            if self.config.e2e_form == "original":
                raise TaskDataError(self._txt_is_paper_form(split, path))
            return read_paper_file(path)
        return (self._original_row(row) for row in super().rows(split))

    def check_columns(self, columns: Sequence[str], origin: str) -> None:
        if not any(all(c in columns for c in pair) for pair in ORIGINAL_COLUMNS):
            raise TaskDataError(
                f"{origin}: expected E2E columns meaning_representation + human_reference (or mr + ref), "
                f"found: {', '.join(columns)}"
            )

    @staticmethod
    def _original_row(row: Row) -> Row:
        mr_key, ref_key = next(pair for pair in ORIGINAL_COLUMNS if pair[0] in row.values)
        return Row({"mr": row.values[mr_key], "ref": row.values[ref_key], "form": "original"}, row.where)

    def _txt_is_paper_form(self, split: str, path: Path) -> str:
        return (
            f"task.{split}_file {path} is an `MR||reference` file, already in the paper's form, but task.e2e_form is "
            f"'original'; use a .csv/.jsonl/.parquet file in the original form (columns mr, ref) or set task.e2e_form "
            f"to 'paper'"
        )

    def sliced_rows(self, split: str) -> Iterable[Row]:
        """The rows of the slice's MRs: E2E slices count distinct MRs in order of first appearance, so that an MR's
        references all fall on one side of a cut (training on some references of an MR and scoring it on the others
        would leak)."""
        start, end = self.row_range(split)
        if (start, end) == (0, None):
            return self.rows(split)
        order: dict[str, int] = {}  # MR (white space folded) -> its index among distinct MRs
        kept = []
        for row in self.rows(split):  # every row is read: an MR's references need not be contiguous in a file
            index = order.setdefault(" ".join(str(row.values["mr"]).split()), len(order))
            if start <= index and (end is None or index < end):
                kept.append(row)
        return kept

    # ---- formatting -----------------------------------------------------------------------------------------------

    def example_from_row(self, row: Row, split: str) -> Example:
        mr, ref = row.values["mr"], row.values["ref"]
        if not isinstance(mr, str) or not mr.strip():
            raise TaskDataError(f"{row.where}: empty MR")
        if not isinstance(ref, str) or not ref.strip():
            raise TaskDataError(f"{row.where}: empty reference")
        if row.values["form"] == "original" and self.config.e2e_form == "paper":
            try:
                mr, ref = convert_row(mr, ref, DIALECT_FOR_SPLIT[split])
            except ValueError as exc:
                raise TaskDataError(f"{row.where}: {exc}") from exc
        return Example(context=mr.strip(), target=" " + ref.strip())

    def limit(self, examples: list[Example], split: str) -> list[Example]:
        """Training: the first N rows. Evaluation: all rows of the first N distinct MRs (task.max_eval_examples)."""
        if split == "train":
            return super().limit(examples, split)
        n = self.config.max_eval_examples
        if n is None:
            return examples
        kept = set(list(dict.fromkeys(e.context for e in examples))[:n])  # dict keeps first-appearance order
        return [e for e in examples if e.context in kept]

    # ---- evaluation -----------------------------------------------------------------------------------------------

    def eval_items(self, examples: Sequence[Example]) -> list[EvalItem]:
        """One item per distinct MR, in order of first appearance, with all its references in file order."""
        groups: dict[str, list[str]] = {}
        for e in examples:
            groups.setdefault(e.context, []).append(e.target.strip())
        return [EvalItem(context, tuple(refs), {}) for context, refs in groups.items()]

    def score(self, predictions: Sequence[str], items: Sequence[EvalItem], *, meteor: bool = True) -> dict[str, float]:
        """The official E2E scorer's five metrics, BLEU, METEOR and ROUGE_L × 100 as the paper prints them
        (``meteor=False``: without METEOR, which needs Java)."""
        from ..metrics.e2e import score_e2e  # lazy: the scorer pulls in Java-backed METEOR and sacrebleu

        self.check_lengths(predictions, items)
        return dict(score_e2e(list(predictions), [list(i.references) for i in items], meteor=meteor))


def read_paper_file(path: Path) -> list[Row]:
    """Rows of an `MR||reference` file (the authors' format). Blank lines are skipped; malformed ones are errors."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark is not part of the first MR
    except UnicodeDecodeError as exc:
        raise TaskDataError(f"{path}: not UTF-8 text ({exc})") from exc
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        if line.count("||") != 1:
            found = "no" if "||" not in line else f"{line.count('||')}"
            raise TaskDataError(f"{where}: expected `MR||reference` with exactly one '||', found {found}: {line[:80]!r}")
        mr, ref = line.split("||")
        if not mr.strip():
            raise TaskDataError(f"{where}: empty MR: {line[:80]!r}")
        if not ref.strip():
            raise TaskDataError(f"{where}: empty reference: {line[:80]!r}")
        rows.append(Row({"mr": mr, "ref": ref, "form": "paper"}, where))
    return rows
