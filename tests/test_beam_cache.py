"""The speed paths of the beam search decode exactly as the plain ones (same ids, same scores, bit for bit):
the buffered KV cache (lora_ft.beam_cache) against transformers' DynamicCache reordered with index_select, and the
two-level top-k (`_row_top_k`) against torch.topk. tests/test_generate.py checks the outputs against the authors' loop."""

from __future__ import annotations

import pytest
import torch

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


@pytest.mark.parametrize("family", ["gpt2", "llama", "opt", "gpt_neox", "gptj"])
def test_buffered_cache_decodes_bit_for_bit_as_the_dynamic_cache(tiny, family, monkeypatch):
    model = peaked(tiny.model(family), seed=3)
    used = []
    expand = beam_cache.expand
    monkeypatch.setattr(beam_cache, "expand", lambda *a: used.append(beam_cache._bufferable(a[0])) or expand(*a))
    buffered = [search(model, early_stop=stop) for stop in (True, False)]
    assert used and all(used), "the buffered cache was not used for this family"
    monkeypatch.setattr(beam_cache, "_bufferable", lambda cache: False)
    plain = [search(model, early_stop=stop) for stop in (True, False)]
    assert buffered == plain  # ids and float scores equal, not approximately
    assert len({len(ids) for ids, _ in plain[0]}) > 1  # prompts finished at different steps


def test_buffered_layer_follows_reorders_and_compaction(tiny):
    """Step by step against DynamicCache: expand to beams, reorder within prompts, drop a prompt, grow past capacity."""
    from transformers.cache_utils import DynamicCache

    model = peaked(tiny.model("llama"), seed=4)
    prompts = [[5, 17, 9, 33], [40, 7], [8, 90, 12]]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    keyword = _cache_keyword(model)

    def run(buffered: bool) -> list[torch.Tensor]:
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        cache, attention, nxt = out.past_key_values, mask, mask.sum(1)
        assert isinstance(cache, DynamicCache)
        # (rows, shared prompt positions): 2 beams per prompt, a reorder within prompts, prompt 1 leaves, more steps.
        plan = [(torch.tensor([0, 0, 1, 1, 2, 2]), None), (torch.tensor([1, 0, 2, 2, 5, 4]), width),
                (torch.tensor([0, 1, 4, 4]), 0), (torch.tensor([1, 0, 3, 2]), width), (torch.tensor([0, 0, 2, 3]), width)]
        logits = []
        for step, (rows, shared) in enumerate(plan):
            if not buffered:
                cache = beam_cache.select_rows(cache, rows)
            elif shared is None:
                cache = beam_cache.expand(cache, rows, width + 2)  # room for 2 tokens: later steps must grow it
                assert type(cache.layers[0]).__name__ == "BufferedLayer"
            else:
                cache = beam_cache.reorder(cache, rows, shared)
            attention = torch.cat([attention[rows], attention.new_ones(len(rows), 1)], dim=1)
            nxt = nxt[rows]
            tokens = torch.arange(len(rows))[:, None] * 11 + step + 3
            out = model(input_ids=tokens, attention_mask=attention, position_ids=nxt[:, None], use_cache=True,
                        **{keyword: cache})
            cache, nxt = out.past_key_values, nxt + 1
            logits.append(out.logits[:, -1])
        return logits

    with torch.inference_mode():
        buffered, plain = run(True), run(False)
    assert all(torch.equal(a, b) for a, b in zip(buffered, plain))


def test_other_caches_are_reordered_as_before():
    rows = torch.tensor([1, 1, 0])
    keys = torch.arange(6.0).view(2, 3)
    nested = ((keys, keys + 1),)
    assert torch.equal(beam_cache.expand(nested, rows, 10)[0][1], (keys + 1)[rows])
    assert torch.equal(beam_cache.reorder(nested, rows, shared=2)[0][0], keys[rows])
    with pytest.raises(TypeError, match="cannot reorder a KV cache of type dict"):
        beam_cache.reorder({"k": keys}, rows, shared=0)


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
