"""The speed paths of the beam search decode as the plain ones: the prompt-shared KV cache and its attention
(lora_ft.beam_cache) against transformers' DynamicCache reordered with index_select and sdpa (the same ids, the scores
to float rounding), and the two-level top-k (`_row_top_k`) against torch.topk (bit for bit).
tests/test_generate.py checks the outputs against the authors' loop."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tiny_families import FAMILIES
from lora_ft import beam_cache
from lora_ft import generate as generate_module
from lora_ft.generate import BeamSearchConfig, _cache_keyword, _row_top_k, _search_batch

# Different lengths (left padding), and 14 of the 128 ids stop so that prompts finish at different steps: the batch
# is compacted while other prompts go on.
PROMPTS = [[5, 17, 9, 33, 21], [40], [8, 90, 12, 64, 7, 100, 3, 55, 71], [120, 6], [13, 13, 47]]
STOPS = tuple(range(2, 128, 9))
CONFIG = BeamSearchConfig(num_beams=4, length_penalty=0.9, no_repeat_ngram_size=2, max_new_tokens=12,
                          stop_token_ids=STOPS)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def peaked(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Large random weights: peaked distributions that depend on the whole context (cache mistakes would show)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.5, generator=gen)
    return model.eval()


def search(model, cfg=CONFIG, early_stop=True):
    with torch.inference_mode():
        return _search_batch(model, PROMPTS, cfg, 0, torch.device("cpu"), _cache_keyword(model), early_stop=early_stop)


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_shared_cache_decodes_as_the_dynamic_cache(tiny, family, monkeypatch):
    model = peaked(tiny.model(family), seed=3)
    implementation = model.config._attn_implementation
    used, attended = [], []
    expand, attention = beam_cache.expand, beam_cache.prompt_shared_attention
    monkeypatch.setattr(beam_cache, "expand", lambda *a, **k: used.append(beam_cache._shareable(a[0], a[1])) or expand(*a, **k))
    monkeypatch.setattr(beam_cache, "prompt_shared_attention", lambda *a, **k: attended.append(1) or attention(*a, **k))
    from transformers.modeling_utils import AttentionInterface
    monkeypatch.setitem(AttentionInterface._global_mapping, beam_cache.ATTENTION_NAME, beam_cache.prompt_shared_attention)
    shared = [search(model, early_stop=stop) for stop in (True, False)]
    # Gemma 2's sliding-window layers keep transformers' own cache, reordered (beam_cache._shareable): same outputs
    shared_expected = family != "gemma"
    assert used and all(u == shared_expected for u in used), "the prompt-shared cache was (not) used for this family"
    assert bool(attended) == shared_expected, "the prompt-shared attention was (not) called"
    assert model.config._attn_implementation == implementation  # restored after every step
    monkeypatch.setattr(beam_cache, "_shareable", lambda model, cache: False)
    plain = [search(model, early_stop=stop) for stop in (True, False)]
    for got, expected in zip(shared, plain):
        # the same ids; the scores to float rounding (the attention adds its two parts in another order)
        assert [ids for ids, _ in got] == [ids for ids, _ in expected]
        assert [s for _, s in got] == pytest.approx([s for _, s in expected], rel=1e-5)
    assert len({len(ids) for ids, _ in plain[0]}) > 1  # prompts finished at different steps


def test_prompt_shared_layer_follows_reorders_and_compaction(tiny):
    """Step by step against DynamicCache: expand to beams, reorder within prompts, drop a prompt, leave hypotheses
    out, grow past capacity."""
    from transformers.cache_utils import DynamicCache

    model = peaked(tiny.model("llama"), seed=4)
    prompts = [[5, 17, 9, 33], [40, 7], [8, 90, 12]]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    keyword = _cache_keyword(model)

    def run(shared: bool) -> list[torch.Tensor]:
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        cache, attention, nxt = out.past_key_values, mask, mask.sum(1)
        assert isinstance(cache, DynamicCache)
        # (rows, prompts kept, slots): 2 beams per prompt; a reorder within prompts; prompt 1 leaves; a hypothesis
        # is left out (slot 1 of 4); another; prompt 0 leaves and only its second slot goes on.
        t = torch.tensor
        plan = [(t([0, 0, 1, 1, 2, 2]), t([0, 1, 2]), None), (t([1, 0, 2, 2, 5, 4]), None, None),
                (t([0, 1, 4, 4]), t([0, 2]), None), (t([1, 3, 2]), None, t([0, 2, 3])),
                (t([0, 0, 2]), None, t([0, 1, 3])), (t([2]), t([1]), t([1])), (t([0]), None, t([1]))]
        logits = []
        for step, (rows, prompts_kept, slots) in enumerate(plan):
            if not shared:
                cache = beam_cache.select_rows(cache, rows)
            elif step == 0:  # room for 2 tokens: later steps must grow it
                cache = beam_cache.expand(model, cache, rows, prompts=prompts_kept, beams=2, new_tokens=2,
                                          prompt_mask=mask, slots=slots)
                assert type(cache.layers[0]).__name__ == "PromptSharedLayer"
            else:
                cache = beam_cache.reorder(cache, rows, prompts=prompts_kept, slots=slots)
            attention = torch.cat([attention[rows], attention.new_ones(len(rows), 1)], dim=1)
            nxt = nxt[rows]
            tokens = torch.arange(len(rows))[:, None] * 11 + step + 3
            out = beam_cache.forward(model, cache, input_ids=tokens, attention_mask=attention,
                                     position_ids=nxt[:, None], use_cache=True, **{keyword: cache})
            cache, nxt = out.past_key_values, nxt + 1
            logits.append(out.logits[:, -1])
        return logits

    with torch.inference_mode():
        shared, plain = run(True), run(False)
    for a, b in zip(shared, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("leave_out", [False, True])  # True: some slots have no hypothesis (they cannot win)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])  # multi-head, grouped-query and multi-query attention
def test_prompt_shared_attention_equals_sdpa_over_the_whole_cache(dtype, kv_heads, leave_out):
    """Against torch's scaled_dot_product_attention over each hypothesis's own full cache (prompt copy + generated)."""
    gen = torch.Generator().manual_seed(0)
    prompts, beams, heads, dim, prompt_length, generated = 3, 4, 4, 8, 6, 5
    rows = prompts * beams
    mask = torch.ones(prompts, prompt_length, dtype=torch.bool)
    mask[0, :2] = False  # left padding
    mask[2, :5] = False
    prompt_keys = torch.randn(prompts, kv_heads, prompt_length, dim, generator=gen)
    prompt_values = torch.randn(prompts, kv_heads, prompt_length, dim, generator=gen)
    keys = torch.randn(rows, kv_heads, generated, dim, generator=gen)
    values = torch.randn(rows, kv_heads, generated, dim, generator=gen)
    query = torch.randn(rows, heads, 1, dim, generator=gen)
    bias = torch.zeros(prompts, prompt_length).masked_fill(~mask, float("-inf"))[:, None, None, :]
    slots = torch.tensor([0, 2, 3, 9]) if leave_out else None  # prompt 1 has no hypothesis left, prompt 2 one
    if leave_out:
        rows, keys, values, query = len(slots), keys[slots], values[slots], query[slots]
    layer = SimpleNamespace(beams=beams, rows=rows, prompt_keys=prompt_keys.to(dtype),
                            prompt_values=prompt_values.to(dtype), prompt_bias=bias, slots=slots)
    module = SimpleNamespace(layer_idx=0)
    got, weights = beam_cache.prompt_shared_attention(
        module, query.to(dtype), keys.to(dtype), values.to(dtype), None, scaling=0.3,
        prompt_shared_cache=SimpleNamespace(layers=[layer]))
    assert weights is None and got.shape == (rows, 1, heads, dim) and got.dtype == dtype

    prompt_of_row = torch.arange(prompts).repeat_interleave(beams) if slots is None else slots // beams
    whole_keys = torch.cat([prompt_keys[prompt_of_row], keys], dim=2)
    whole_values = torch.cat([prompt_values[prompt_of_row], values], dim=2)
    whole_mask = torch.cat([mask[prompt_of_row], torch.ones(rows, generated, dtype=torch.bool)], dim=1)
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, whole_keys.repeat_interleave(heads // kv_heads, 1), whole_values.repeat_interleave(heads // kv_heads, 1),
        attn_mask=whole_mask[:, None, None, :], scale=0.3).transpose(1, 2)
    tolerance = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(got.float(), expected, **tolerance)


@pytest.mark.parametrize("shared", [True, False])
def test_leaving_out_hypotheses_that_cannot_win_changes_no_output(tiny, shared, monkeypatch):
    model = peaked(tiny.model("llama"), seed=3)
    if not shared:
        monkeypatch.setattr(beam_cache, "_shareable", lambda model, cache: False)
    counts = []  # hypotheses that went on at each step, of the slots there were
    reorder = beam_cache.reorder
    monkeypatch.setattr(beam_cache, "reorder", lambda cache, rows, **k: counts.append(len(rows)) or reorder(cache, rows, **k))
    cfg = BeamSearchConfig(num_beams=6, length_penalty=0.9, no_repeat_ngram_size=2, max_new_tokens=14,
                           stop_token_ids=STOPS)
    left_out = search(model, cfg, early_stop=True)  # leaves out hypotheses that cannot win
    pruned_steps = sum(1 for n in counts if n % cfg.num_beams)
    every_step = search(model, cfg, early_stop=False)  # the authors' schedule: every slot, every step
    assert [ids for ids, _ in left_out] == [ids for ids, _ in every_step]
    assert [s for _, s in left_out] == pytest.approx([s for _, s in every_step], rel=1e-5)
    assert pruned_steps >= 3, counts  # the case exercises what it claims


def test_prompt_shared_attention_refuses_what_it_does_not_compute():
    module, query = SimpleNamespace(layer_idx=0), torch.zeros(2, 2, 1, 4)
    with pytest.raises(RuntimeError, match="without the prompt-shared cache"):
        beam_cache.prompt_shared_attention(module, query, query, query, None)
    layer = SimpleNamespace(beams=2, rows=2)
    with pytest.raises(NotImplementedError, match="sliding_window"):
        beam_cache.prompt_shared_attention(module, query, query, query, None, sliding_window=4,
                                           prompt_shared_cache=SimpleNamespace(layers=[layer]))


def test_the_attention_implementation_is_restored_when_a_step_fails(tiny, monkeypatch):
    model = peaked(tiny.model("gpt2"), seed=3)
    monkeypatch.setattr(beam_cache, "prompt_shared_attention", lambda *a, **k: 1 / 0)
    from transformers.modeling_utils import AttentionInterface
    monkeypatch.setitem(AttentionInterface._global_mapping, beam_cache.ATTENTION_NAME, beam_cache.prompt_shared_attention)
    with pytest.raises(ZeroDivisionError):
        search(model)
    assert model.config._attn_implementation == "sdpa"


def test_other_caches_are_reordered_as_before():
    rows = torch.tensor([1, 1, 0])
    keys = torch.arange(6.0).view(2, 3)
    nested = ((keys, keys + 1),)
    not_a_transformers_model = torch.nn.Linear(1, 1)
    expanded = beam_cache.expand(not_a_transformers_model, nested, rows, prompts=torch.tensor([1, 0]), beams=3,
                                 new_tokens=10, prompt_mask=torch.ones(2, 3))
    assert torch.equal(expanded[0][1], (keys + 1)[rows])
    assert torch.equal(beam_cache.reorder(nested, rows, prompts=None, slots=None)[0][0], keys[rows])
    with pytest.raises(TypeError, match="cannot reorder a KV cache of type dict"):
        beam_cache.reorder({"k": keys}, rows, prompts=None, slots=None)


def test_two_level_top_k_gives_torch_topk_values():
    gen = torch.Generator().manual_seed(0)
    for width in (50257, 5000, 1000, 100):
        for trial in range(6):
            x = torch.randn(23, width, generator=gen)
            if trial == 1:
                x = (x * 3).round()  # many ties
            if trial == 2:
                x[:, torch.randint(0, width, (width // 2,), generator=gen)] = float("-inf")  # banned tokens
            if trial == 3:
                x[3] = float("-inf")
                x[4, 7] = float("nan")
            for k in (1, 4, 10):
                expected = x.topk(k, dim=1)
                values, columns = _row_top_k(x, k)
                assert torch.equal(values.nan_to_num(nan=7.0), expected.values.nan_to_num(nan=7.0))
                assert torch.equal(x.gather(1, columns).nan_to_num(nan=7.0), values.nan_to_num(nan=7.0))
                assert all(len(set(row)) == k for row in columns.tolist())  # k different tokens
                if trial == 0:  # distinct values: the same tokens in the same order
                    assert torch.equal(columns, expected.indices)


def test_two_level_top_k_decodes_as_torch_topk(tiny, monkeypatch):
    model = peaked(tiny.model("gpt2"), seed=5)
    monkeypatch.setattr(generate_module, "_BLOCK", 2)  # 64 blocks of the 128 ids: the two-level path runs
    calls = []
    row_top_k = generate_module._row_top_k
    monkeypatch.setattr(generate_module, "_row_top_k", lambda v, k: calls.append(v.shape[1] // 2 >= 8 * k) or row_top_k(v, k))
    two_level = search(model)
    assert calls and all(calls)
    monkeypatch.setattr(generate_module, "_row_top_k", lambda values, k: values.topk(k, dim=1))
    assert two_level == search(model)
