"""The paper's published numbers (Hu et al. 2021, Tables 3, 4 and 18) and the rule that matches a run to a row.

Values are copied as printed (BLEU, METEOR, ROUGE-L, accuracies, ROUGE-1/2/L in percent; NIST and
CIDEr raw). ``stds`` holds the printed ± values of Table 3 ("±.1" → 0.1). Table 4 prints no per-row
±, only a global fluctuation (:data:`TABLE4_FLUCTUATION`).

Matching (:func:`match_paper_row`): task + model + method + size.
- Table 3 (E2E) rows need the same pretrained GPT-2 model (``gpt2-medium`` / ``gpt2-large``, hub id or
  a local folder of that name; not ``model.random_init`` nor ``model.config_overrides``) and the same
  method and size. LoRA rows also need every block adapted at one rank (no ``layers``/``rank_per_target``).
- Table 4 rows are GPT-3 175B, which is not public: any model run on WikiSQL/MNLI/SAMSum matches by
  method + size, and the match says ``same_model=False`` so reports label it "the paper's GPT-3 175B
  number, a different model".
- ``compare_with="gpt2-medium"`` (``lora-ft table --compare-with``): an E2E run on a model Table 3 does not have (a
  stand-in such as SmolLM2-135M) is set beside that GPT-2 model's rows, ``same_model=False``. Sizes the paper defines
  by structure must be equal (rank and targets, prefix and infix length, top_k); the rows it sizes only by a parameter
  count matched to prior work (``sized_by_count``: the Adapter rows) match by share instead: the row of the run's
  method whose share of its model's parameters (the model's FT row) is nearest, on a log scale, the run's share of
  its base model's (total minus the adapter's), and within a factor of :data:`SHARE_MATCH_FACTOR`. That is the rule
  scripts/make_mini_configs.py sizes the mini-paper's adapters by (the bottleneck whose count is nearest the share).
  A run on a GPT-2 model of Table 3 still matches its own model's rows.
Sizes the paper does not state were inferred from its parameter counts (see ``size`` comments); the
GPT-2 M Adapter^H row states no size at all, so it matches by the run's measured trainable count
(within 3 % of 11.09M). The GPT-3 Adapter^H rows (7.1M, 40.1M) are bottlenecks 1 and 8 on GPT-3's shape, so a run
of any model matches them by bottleneck, as LoRA rows match by rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Mapping

# Column keys used across the report package (score names a run writes are matched to these by alias).
TABLE3_METRICS: tuple[str, ...] = ("bleu", "nist", "meteor", "rouge_l", "cider")
TABLE4_METRICS: tuple[str, ...] = ("wikisql_acc", "mnli_acc", "samsum_r1", "samsum_r2", "samsum_rl")

# Which task each Table 4 column belongs to.
TABLE4_METRIC_TASK: dict[str, str] = {
    "wikisql_acc": "wikisql",
    "mnli_acc": "mnli",
    "samsum_r1": "samsum",
    "samsum_r2": "samsum",
    "samsum_rl": "samsum",
}

# Table 4 caption: "fluctuation" of each task, not a per-row standard deviation.
TABLE4_FLUCTUATION: dict[str, float] = {
    "wikisql_acc": 0.5,
    "mnli_acc": 0.1,
    "samsum_r1": 0.2,
    "samsum_r2": 0.2,
    "samsum_rl": 0.1,
}

GPT2_MODELS: dict[str, str] = {"gpt2-medium": "GPT-2 M", "gpt2-large": "GPT-2 L"}
GPT3_LABEL = "GPT-3 175B"


@dataclass(frozen=True)
class PaperRow:
    """One printed row of Table 3 or 4."""

    table: str  # "table3" | "table4"
    label: str  # as printed, e.g. "GPT-2 M (LoRA)"
    model: str  # "gpt2-medium" | "gpt2-large" | "gpt3-175b"
    method: str  # lora_ft method name
    size: Mapping[str, Any]  # config fields that identify the row's size (empty: any size)
    trainable_printed: str  # as printed, e.g. "0.35M", "175,255.8M"
    scores: Mapping[str, float]
    stds: Mapping[str, float] = field(default_factory=dict)
    from_prior_work: bool = False  # printed with "*"
    match_by_params: bool = False  # size unknown: match the measured trainable count instead
    sized_by_count: bool = False  # the paper gives its size as a parameter count (stand-ins match it by share)

    @property
    def trainable(self) -> float:
        """The printed trainable count as a number of parameters (0.35M → 350000.0)."""
        return float(self.trainable_printed.rstrip("M").replace(",", "")) * 1e6

    @property
    def display_label(self) -> str:
        """The printed label with its trainable count and the "*" of prior-work rows."""
        star = "*" if self.from_prior_work else ""
        return f"{self.label}{star} {self.trainable_printed}"


@dataclass(frozen=True)
class PaperMatch:
    """A run's paper row, and whether the paper used the same model."""

    row: PaperRow
    same_model: bool

    @property
    def label(self) -> str:
        """E.g. "GPT-2 M (LoRA) 0.35M", or "GPT-3 175B (LoRA) 4.7M [a different model]" for stand-in runs."""
        text = self.row.display_label
        return text if self.same_model else f"{text} [a different model]"


def _t3(label: str, model: str, method: str, size: Mapping[str, Any], trainable: str, values: str,
        stds: str = "", star: bool = False, by_params: bool = False) -> PaperRow:
    scores = dict(zip(TABLE3_METRICS, (float(v) for v in values.split()), strict=True))
    std_map = dict(zip(TABLE3_METRICS, (float(v) for v in stds.split()), strict=True)) if stds else {}
    # Adapter sizes in Table 3 are parameter counts chosen to match prior work's budgets, not structural choices.
    by_count = method in ("adapter_l", "adapter_h")
    return PaperRow("table3", label, model, method, size, trainable, scores, std_map, star, by_params, by_count)


def _t4(method_label: str, method: str, size: Mapping[str, Any], trainable: str, values: str) -> PaperRow:
    scores = dict(zip(TABLE4_METRICS, (float(v) for v in values.split()), strict=True))
    return PaperRow("table4", f"{GPT3_LABEL} ({method_label})", "gpt3-175b", method, size, trainable, scores)


# Table 3: GPT-2 on E2E (BLEU NIST METEOR ROUGE-L CIDEr).
TABLE3: tuple[PaperRow, ...] = (
    _t3("GPT-2 M (FT)", "gpt2-medium", "ft", {}, "354.92M", "68.2 8.62 46.2 71.0 2.47", star=True),
    # Adapter^L sizes inferred from the counts: L*(2*d*r + r + d) + 2*L*d = 368,784 at r=6, 11,089,152 at r=224.
    _t3("GPT-2 M (Adapter^L)", "gpt2-medium", "adapter_l", {"bottleneck": 6}, "0.37M", "66.3 8.41 45.0 69.8 2.40", star=True),
    _t3("GPT-2 M (Adapter^L)", "gpt2-medium", "adapter_l", {"bottleneck": 224}, "11.09M", "68.9 8.71 46.1 71.3 2.47", star=True),
    # Size not stated; the count equals the Adapter^L row's, which no Houlsby bottleneck reproduces exactly.
    _t3("GPT-2 M (Adapter^H)", "gpt2-medium", "adapter_h", {}, "11.09M", "67.3 8.50 46.0 70.7 2.44", ".6 .07 .2 .2 .01",
        by_params=True),
    _t3("GPT-2 M (FT^Top2)", "gpt2-medium", "ft_top", {"top_k": 2}, "25.19M", "68.1 8.59 46.0 70.8 2.41", star=True),
    # Li & Liang's prefix tuning: prefix length 10, no infix.
    _t3("GPT-2 M (PreLayer)", "gpt2-medium", "prelayer", {"prefix_length": 10, "infix_length": 0}, "0.35M",
        "69.7 8.81 46.1 71.4 2.49", star=True),
    _t3("GPT-2 M (LoRA)", "gpt2-medium", "lora", {"rank": 4, "targets": ("q", "v")}, "0.35M",
        "70.4 8.85 46.8 71.8 2.53", ".1 .02 .2 .1 .02"),
    _t3("GPT-2 L (FT)", "gpt2-large", "ft", {}, "774.03M", "68.5 8.78 46.0 69.9 2.45", star=True),
    # L*(2*d*r + r + d) + 2*L*d = 875,808 at r=8, 23,002,848 at r=248.
    _t3("GPT-2 L (Adapter^L)", "gpt2-large", "adapter_l", {"bottleneck": 8}, "0.88M", "69.1 8.68 46.3 71.4 2.49",
        ".1 .03 .0 .2 .0"),
    _t3("GPT-2 L (Adapter^L)", "gpt2-large", "adapter_l", {"bottleneck": 248}, "23.00M", "68.9 8.70 46.1 71.3 2.45",
        ".3 .04 .1 .2 .02"),
    _t3("GPT-2 L (PreLayer)", "gpt2-large", "prelayer", {"prefix_length": 10, "infix_length": 0}, "0.77M",
        "70.3 8.85 46.2 71.7 2.47", star=True),
    _t3("GPT-2 L (LoRA)", "gpt2-large", "lora", {"rank": 4, "targets": ("q", "v")}, "0.77M",
        "70.4 8.89 46.8 72.0 2.47", ".1 .02 .2 .2 .02"),
)

# Table 4: GPT-3 175B (WikiSQL acc, MNLI-m acc, SAMSum R1 R2 RL).
TABLE4: tuple[PaperRow, ...] = (
    _t4("FT", "ft", {}, "175,255.8M", "73.8 89.5 52.0 28.0 44.5"),
    _t4("BitFit", "bitfit", {}, "14.2M", "71.3 91.0 51.3 27.4 43.5"),
    _t4("PreEmbed", "preembed", {"prefix_length": 256, "infix_length": 8}, "3.2M", "63.1 88.6 48.3 24.2 40.5"),
    _t4("PreLayer", "prelayer", {"prefix_length": 8, "infix_length": 8}, "20.2M", "70.1 89.5 50.8 27.3 43.5"),
    # GPT-3 (L = 96, d = 12288): L*(4*d*r + 2*r + 2*d) = 7,078,080 at r=1, 40,109,568 at r=8.
    _t4("Adapter^H", "adapter_h", {"bottleneck": 1}, "7.1M", "71.9 89.8 53.0 28.9 44.8"),
    _t4("Adapter^H", "adapter_h", {"bottleneck": 8}, "40.1M", "73.2 91.5 53.2 29.0 45.1"),
    _t4("LoRA", "lora", {"rank": 1, "targets": ("q", "v")}, "4.7M", "73.4 91.7 53.8 29.8 45.9"),
    _t4("LoRA", "lora", {"rank": 8, "targets": ("q", "v")}, "37.7M", "74.0 91.6 53.4 29.2 45.1"),
)

# Table 18 (GPT-2 M, E2E, LoRA on W_q and W_v): test BLEU by rank. The paper's Table 6 (GPT-3 WikiSQL/MNLI by
# rank) is not carried: its values are not in the project's reference notes and were not verified.
TABLE18_RANK_BLEU: dict[int, float] = {1: 68.72, 2: 69.17, 4: 70.38, 8: 69.57, 16: 69.61}

TASKS_TABLE3 = ("e2e",)
TASKS_TABLE4 = ("wikisql", "mnli", "samsum")

# Tolerance for rows matched by trainable count (``match_by_params``).
PARAMS_MATCH_RTOL = 0.03
# A stand-in's adapter matches a Table 3 row sized by count when their shares of their models' parameters are within
# this factor: the nearest bottleneck to a share is at most one step away, and one step (b=1 -> 2, the coarsest) is
# a factor of 2, so the nearest is within ~1.5 of the target.
SHARE_MATCH_FACTOR = 1.5


def model_key(name_or_path: str) -> str:
    """A model's short name: last path component, lower-cased, without ``.gguf``.

    ``openai-community/gpt2-medium`` → ``gpt2-medium``; ``/models/gpt2-large/`` → ``gpt2-large``.
    """
    name = PurePath(str(name_or_path).rstrip("/\\")).name.lower()
    return name[: -len(".gguf")] if name.endswith(".gguf") else name


def _size_matches(method_cfg: Mapping[str, Any], size: Mapping[str, Any]) -> bool:
    if str(method_cfg.get("name")) == "lora":
        # The paper adapts every block at one rank: a block subset or per-weight ranks is another model.
        if method_cfg.get("layers") is not None:
            return False
        if any(r != method_cfg.get("rank") for r in (method_cfg.get("rank_per_target") or {}).values()):
            return False
    for key, expected in size.items():
        value = method_cfg.get(key)
        if key == "targets":
            # Order does not matter: [v, q] is the same placement as [q, v].
            if value is None or sorted(str(t) for t in value) != sorted(expected):
                return False
        elif key == "infix_length":
            if (value or 0) != expected:  # missing infix means none
                return False
        elif value != expected:
            return False
    return True


def paper_model_total(model: str) -> float:
    """A Table 3 model's parameter count as the paper prints it: its FT row's (GPT-2 M: 354.92M)."""
    return next(r.trainable for r in TABLE3 if r.model == model and r.method == "ft")


def _nearest_share(rows: list[PaperRow], trainable: int | None, total: int | None) -> PaperRow | None:
    """The row whose share of its model is nearest (log scale) the run's share of its base model, within the factor."""
    if not rows or trainable is None or total is None or total <= trainable or trainable <= 0:
        return None
    share = trainable / (total - trainable)  # an adapter's parameters are all added to the base model's

    def distance(row: PaperRow) -> float:
        return abs(math.log(share / (row.trainable / paper_model_total(row.model))))

    best = min(rows, key=distance)
    return best if distance(best) <= math.log(SHARE_MATCH_FACTOR) else None


def match_paper_row(config: Mapping[str, Any], trainable: int | None = None, *, compare_with: str | None = None,
                    total: int | None = None) -> PaperMatch | None:
    """The paper row a run's resolved config reproduces, or None.

    ``trainable`` (the run's measured trainable count) is only used for rows whose size the paper does
    not state (GPT-2 M Adapter^H), and with ``total`` (its measured total) for a stand-in's adapter under
    ``compare_with`` (a Table 3 model key, e.g. "gpt2-medium"). See the module docstring for the rule.
    """
    if compare_with is not None and compare_with not in GPT2_MODELS:
        raise ValueError(f"compare_with={compare_with!r}: expected one of {', '.join(GPT2_MODELS)}")
    task = str((config.get("task") or {}).get("name", "")).lower()
    method_cfg = config.get("method") or {}
    method = str(method_cfg.get("name", "")).lower()
    model_cfg = config.get("model") or {}
    model = model_key(model_cfg.get("name_or_path", ""))
    if task in TASKS_TABLE3:
        if model_cfg.get("random_init") or model_cfg.get("config_overrides"):
            return None  # random weights or a changed architecture: not the pretrained GPT-2 of Table 3
        if model in GPT2_MODELS or compare_with is None:
            candidates, same_model = [r for r in TABLE3 if r.model == model], True
        else:
            candidates, same_model = [r for r in TABLE3 if r.model == compare_with], False
    elif task in TASKS_TABLE4:
        candidates, same_model = list(TABLE4), False
    else:
        return None
    by_share: list[PaperRow] = []
    for row in candidates:
        if row.method != method:
            continue
        if row.table == "table3" and not same_model and row.sized_by_count:
            by_share.append(row)  # another model: its count says nothing about this model's bottleneck
            continue
        if not _size_matches(method_cfg, row.size):
            continue
        if row.match_by_params:
            if trainable is None or abs(trainable - row.trainable) > PARAMS_MATCH_RTOL * row.trainable:
                continue
        return PaperMatch(row, same_model)
    nearest = _nearest_share(by_share, trainable, total)
    return PaperMatch(nearest, same_model) if nearest is not None else None


def paper_rows(table: str) -> tuple[PaperRow, ...]:
    """``TABLE3`` or ``TABLE4`` by name ("table3" / "table4")."""
    if table == "table3":
        return TABLE3
    if table == "table4":
        return TABLE4
    raise ValueError(f"unknown paper table {table!r}: expected 'table3' or 'table4'")
