"""Tests of lora_ft.generate: the LoRA authors' beam search (microsoft/LoRA examples/NLG/src/gpt2_beam.py), batched.

Three kinds of evidence:
- hand-worked cases on a table "model" whose next-token distribution depends only on the last token, with the winners
  worked out by hand in comments, and Hugging Face's `generate` run on the same table to show where it differs;
- a line-by-line transcription of the authors' loop (one prompt, no cache, no padding, all steps) that the batched,
  cached, early-stopping implementation must match on tiny random GPT-2 and LLaMA models;
- greedy decoding (num_beams=1) against a hand-written loop and HF greedy `generate`; batching invariance.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from lora_ft.generate import (
    BeamSearchConfig,
    _ban_repeated_ngrams_,
    _cache_keyword,
    _search_batch,
    beam_search,
    decode_completion,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ----------------------------------------------------------------------------------------------------------------------
# A table "model": next-token probabilities depend only on the last token.

E, A, B, C, D, P = range(6)  # E is the stop token, P the prompt's last token
NAMES = "EABCDP"


def log_table(rows: dict[int, dict[int, float]]) -> torch.Tensor:
    """Log-probs (6 x 6) from {last token: {next token: probability}}; each row must sum to 1."""
    table = torch.full((6, 6), 1 / 6)  # rows not given (never reached by the cases below): uniform
    for last, probs in rows.items():
        assert sorted(probs) == list(range(6)) and math.isclose(sum(probs.values()), 1.0), (last, probs)
        table[last] = torch.tensor([probs[t] for t in range(6)])
    return table.log()


class TableLM(nn.Module):
    """Logits = log table[last token]. Its "KV cache" is the tokens seen so far, so it checks the caller's bookkeeping:
    the cache rows must follow the beams, and the attention mask and position ids must fit the cache."""

    def __init__(self, log_probs: torch.Tensor):
        super().__init__()
        self.register_buffer("log_probs", log_probs)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None):
        seen = input_ids if past_key_values is None else torch.cat([past_key_values[0], input_ids], dim=1)
        assert attention_mask.shape == seen.shape, "the attention mask must cover the cache and the new tokens"
        assert torch.equal(position_ids[:, -1], attention_mask.sum(dim=1) - 1), "position = number of real tokens - 1"
        if past_key_values is not None:  # each row's cache holds its own hypothesis: the new token follows its last one
            assert seen.shape[0] == input_ids.shape[0]
        return SimpleNamespace(logits=self.log_probs[input_ids], past_key_values=(seen,))


class TableConfig(PretrainedConfig):
    model_type = "table_lm_test"

    def __init__(self, vocab_size: int = 6, **kwargs):
        self.vocab_size = vocab_size
        super().__init__(**kwargs)


class HFTableLM(PreTrainedModel, GenerationMixin):
    """The same table as a transformers model, so that HF's `generate` can run on it (without a cache)."""

    config_class = TableConfig

    def __init__(self, log_probs: torch.Tensor):
        super().__init__(TableConfig(vocab_size=6, eos_token_id=E, pad_token_id=E))
        self.register_buffer("log_probs", log_probs)
        self.unused = nn.Parameter(torch.zeros(1))  # transformers reads a parameter for the device and dtype
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        return CausalLMOutputWithPast(logits=self.log_probs[input_ids])


def ours(log_probs: torch.Tensor, prompt: list[int], **config) -> list[int]:
    cfg = BeamSearchConfig(stop_token_ids=(E,), **config)
    return beam_search(TableLM(log_probs), [prompt], cfg, pad_token_id=E)[0]


def hf(log_probs: torch.Tensor, prompt: list[int], **generate_kwargs) -> list[int]:
    """HF beam search on the table; the generated ids up to (excluding) the first stop token."""
    model = HFTableLM(log_probs).eval()
    out = model.generate(torch.tensor([prompt]), do_sample=False, use_cache=False, eos_token_id=E, pad_token_id=E,
                         **generate_kwargs)[0, len(prompt):].tolist()
    return out[: out.index(E)] if E in out else out


def names(ids: list[int]) -> str:
    return "".join(NAMES[t] for t in ids)


# ----------------------------------------------------------------------------------------------------------------------
# (a) no-repeat n-gram over the GENERATED tokens only.

NGRAM_TABLE = log_table({
    P: {A: .9, C: .05, E: .02, B: .01, D: .01, P: .01},
    A: {B: .6, C: .25, D: .1, E: .03, A: .01, P: .01},
    B: {E: .9, A: .03, B: .025, C: .02, D: .015, P: .01},
    C: {E: .9, A: .03, B: .025, C: .02, D: .015, P: .01},
    D: {E: .9, A: .03, B: .025, C: .02, D: .015, P: .01},
})


def test_no_repeat_ngram_counts_only_generated_tokens_unlike_hf():
    # Prompt "A B P", 2 beams, bigrams banned, length penalty 1. ln .9 = -0.105, ln .6 = -0.511, ln .25 = -1.386,
    # ln .05 = -2.996, ln .1 = -2.303.
    # Authors' rule (the prompt's bigram "A B" does not count):
    #   step 0 from P: A -0.105, C -2.996                                   -> beams A, C
    #   step 1: AB -0.616, AC -1.492 (CE -3.101 is third)                   -> beams AB, AC
    #   step 2: ABE -0.722, ACE -1.598, both finished: /3 -> -0.241, -0.533 -> winner "AB"
    # HF counts the prompt, so after a generated A the prompt's "A B" bans B (from the log-probs, not renormalised):
    #   step 0: top 4 A -0.105, C -2.996, E -3.912, ...; only the top 2 may finish -> running A, C
    #   step 1: AC -1.492, AD -2.408, CE -3.101, AE -3.612; top 2 not finished -> running AC, AD
    #   step 2: ACE -1.598, ADE -2.513 finish: /3 -> -0.533, -0.838          -> winner "AC"
    prompt = [A, B, P]
    assert names(ours(NGRAM_TABLE, prompt, num_beams=2, length_penalty=1.0, no_repeat_ngram_size=2,
                      max_new_tokens=5)) == "AB"
    assert names(hf(NGRAM_TABLE, prompt, num_beams=2, length_penalty=1.0, no_repeat_ngram_size=2,
                    max_new_tokens=5)) == "AC"
    # Without the ban HF finds "AB" too (steps 1-2 as ours): the difference above is the prompt being counted.
    assert names(hf(NGRAM_TABLE, prompt, num_beams=2, length_penalty=1.0, no_repeat_ngram_size=0,
                    max_new_tokens=5)) == "AB"


# ----------------------------------------------------------------------------------------------------------------------
# (b) length normalisation: sum of log-probs / (generated length incl. the stop token) ** length_penalty.

LENGTH_TABLE = log_table({
    P: {E: .4, A: .35, C: .15, B: .05, D: .03, P: .02},
    A: {B: .9, E: .04, C: .025, A: .015, D: .012, P: .008},
    B: {E: .9, A: .03, B: .025, C: .02, D: .015, P: .01},
    C: {E: .8, A: .1, B: .05, C: .03, D: .015, P: .005},
})


def test_length_normalisation_picks_a_longer_winner_than_the_raw_sum():
    # Prompt "P", 2 beams, no ban. ln .4 = -0.916, ln .35 = -1.050, ln .9 = -0.105, ln .04 = -3.219.
    # Penalty 0.9 (2 ** 0.9 = 1.866, 3 ** 0.9 = 2.688):
    #   step 0: E -0.916 finishes: -0.916 / 1 = -0.916 is the best so far; its slot is dead; A -1.050 runs
    #   step 1 (from A only): AB -1.155 runs, AE -4.269 finishes: -4.269 / 1.866 = -2.288 (worse)
    #   step 2: ABE -1.260 finishes: -1.260 / 2.688 = -0.469 > -0.916      -> winner "AB"
    #   (the other beam, ABA -4.662, can reach at best -4.662 / 4 ** 0.9 = -0.929 within 6 tokens)
    # Raw sums (penalty 0): "E" -0.916 beats "ABE" -1.260                   -> winner "" (the empty completion)
    assert names(ours(LENGTH_TABLE, [P], num_beams=2, length_penalty=0.9, no_repeat_ngram_size=0,
                      max_new_tokens=6)) == "AB"
    assert names(ours(LENGTH_TABLE, [P], num_beams=2, length_penalty=0.0, no_repeat_ngram_size=0,
                      max_new_tokens=6)) == ""
    # HF 5.24 normalises the same way: `_update_finished_beams` divides the summed log-probs (incl. EOS) by
    # (cur_len + 1 - decoder_prompt_len) ** length_penalty, i.e. the generated length incl. EOS. It finds "AB" too
    # (its path differs: E and CE finish on the way, -0.916 and -2.002 / 1.866 = -1.073).
    assert names(hf(LENGTH_TABLE, [P], num_beams=2, length_penalty=0.9, no_repeat_ngram_size=0,
                    max_new_tokens=6)) == "AB"


# ----------------------------------------------------------------------------------------------------------------------
# (c) a finished hypothesis takes its beam slot for a step (authors); HF refills it from 2 x num_beams candidates.

SLOT_TABLE = log_table({
    P: {E: .4, A: .3, C: .2, B: .05, D: .03, P: .02},
    A: {E: .5, B: .2, C: .15, D: .1, A: .03, P: .02},
    B: {E: .9, A: .03, B: .025, C: .02, D: .015, P: .01},
    C: {D: .97, E: .01, A: .008, B: .006, C: .004, P: .002},
    D: {E: .97, A: .01, B: .008, C: .006, D: .004, P: .002},
})


def test_finished_hypothesis_uses_a_beam_slot_unlike_hf():
    # Prompt "P", 2 beams, penalty 1, at most 3 tokens. ln .4 = -0.916, ln .3 = -1.204, ln .2 = -1.609, ln .5 = -0.693,
    # ln .97 = -0.030.
    # Authors: step 0 keeps E (finished, -0.916) and A -1.204; C is third and never explored.
    #   step 1 from A only: AE -1.897 finishes (-1.897 / 2 = -0.949, worse), AB -2.813 runs
    #   step 2: ABE -2.918 / 3 = -0.973 (worse); the unfinished ABA -6.320 / 3 is worse still -> winner "" (E)
    # HF keeps 4 candidates: after E finishes, A and C both run.
    #   step 1: CD -1.640 and AE -1.897 are the top 2 (AE finishes: -0.949); running CD, AB
    #   step 2: CDE -1.670 / 3 = -0.557 beats E's -0.916                   -> winner "CD"
    assert names(ours(SLOT_TABLE, [P], num_beams=2, length_penalty=1.0, no_repeat_ngram_size=0,
                      max_new_tokens=3)) == ""
    assert names(hf(SLOT_TABLE, [P], num_beams=2, length_penalty=1.0, no_repeat_ngram_size=0,
                    max_new_tokens=3)) == "CD"


# ----------------------------------------------------------------------------------------------------------------------
# The authors' loop, transcribed (gpt2_beam.py `beam` + `_calc_banned_ngram_tokens` + `_add_beam_candidate`) for one
# prompt, recomputing the whole sequence at every step: no cache, no padding, no early stop, no vectorised ban.


def authors_banned(history: list[list[int]], n: int, cur_len: int) -> list[list[int]]:
    if cur_len + 1 < n:
        return [[] for _ in history]
    banned = []
    for gen_tokens in history:
        ngrams: dict[tuple[int, ...], list[int]] = {}
        for ngram in zip(*[gen_tokens[i:] for i in range(n)]):
            ngrams[tuple(ngram[:-1])] = ngrams.get(tuple(ngram[:-1]), []) + [ngram[-1]]
        banned.append(ngrams.get(tuple(gen_tokens[cur_len + 1 - n : cur_len]), []))
    return banned


@torch.no_grad()
def authors_beam(model: nn.Module, prompt: list[int], cfg: BeamSearchConfig) -> tuple[list[int], float]:
    k, lp, n, stops = cfg.num_beams, cfg.length_penalty, cfg.no_repeat_ngram_size, set(cfg.stop_token_ids)
    beam_scores = torch.zeros(k)
    history: list[list[int]] | None = None
    best_score, best_sequence = None, None
    for i in range(cfg.max_new_tokens):
        sequences = [prompt] if history is None else [prompt + h for h in history]
        logits = model(input_ids=torch.tensor(sequences)).logits[:, -1, :].float()
        if n > 0 and history is not None:
            for row, banned in enumerate(authors_banned(history, n, i)):
                logits[row, banned] = -float("inf")
        logprob = torch.log(torch.softmax(logits, dim=-1))
        vocab = logprob.shape[-1]
        next_scores = logprob[0] if i == 0 else (beam_scores[:, None] + logprob).view(-1)
        next_scores, next_tokens = torch.topk(next_scores, k, largest=True, sorted=True)
        beam_id, token_id = (next_tokens // vocab).tolist(), (next_tokens % vocab).tolist()
        history = [([] if history is None else history[b]) + [t] for b, t in zip(beam_id, token_id)]
        beam_scores = next_scores.clone()
        for row in range(k):  # _add_beam_candidate with the stop tokens
            if history[row][-1] in stops:
                score = float(beam_scores[row] / (i + 1) ** lp)
                if best_score is None or best_score < score:
                    best_score, best_sequence = score, history[row]
                beam_scores[row] = -float("inf")
    for row in range(k):  # _add_beam_candidate without stop tokens: every remaining beam
        score = float(beam_scores[row] / cfg.max_new_tokens ** lp)
        if best_score is None or best_score < score:
            best_score, best_sequence = score, history[row]
    assert best_sequence is not None
    if best_sequence[-1] in stops:
        best_sequence = best_sequence[:-1]
    return best_sequence, best_score


def test_vectorised_ban_matches_the_authors_rule():
    gen = torch.Generator().manual_seed(0)
    vocab = 5  # a small vocabulary repeats n-grams often
    for n in (1, 2, 3, 4):
        for length in range(0, 14):
            history = torch.randint(0, vocab, (40, length), generator=gen)
            logits = torch.zeros(40, vocab)
            _ban_repeated_ngrams_(logits, history, n)
            expected = authors_banned(history.tolist(), n, length) if length > 0 else [[] for _ in range(40)]
            got = [sorted(torch.nonzero(row == -float("inf")).flatten().tolist()) for row in logits]
            assert got == [sorted(set(b)) for b in expected], (n, length)


# ----------------------------------------------------------------------------------------------------------------------
# Tiny random transformers models with peaked distributions (the default init gives near-uniform ones, i.e. near-ties).


def peaked(model: nn.Module, seed: int) -> nn.Module:
    """Large random weights: peaked next-token distributions (the default init gives near-uniform ones, i.e. near-ties)
    that depend on the whole context, positions included (so wrong padding, positions or cache rows would show)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:  # embeddings (token and position) and projections; norms keep their init
                param.normal_(0.0, 1.0 if "emb" in name or "wte" in name or "wpe" in name else 0.3, generator=gen)
    return model.eval()


class ShiftedEmbedding(nn.Module):
    """An input embedding wrapped in another module, as the prefix methods do (a shift: LayerNorm would undo a scale)."""

    def __init__(self, base: nn.Embedding):
        super().__init__()
        self.base = base
        self.shift = nn.Parameter(torch.randn(base.embedding_dim, generator=torch.Generator().manual_seed(5)))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.base(input_ids) + self.shift


@pytest.fixture(scope="module")
def models(tiny) -> dict[str, nn.Module]:
    wrapped = peaked(tiny.model("gpt2"), seed=1)
    wrapped.set_input_embeddings(ShiftedEmbedding(wrapped.get_input_embeddings()))
    built = {"gpt2": peaked(tiny.model("gpt2"), seed=1), "llama": peaked(tiny.model("llama"), seed=2),
             "gpt2-wrapped": wrapped}
    with torch.no_grad():  # the next token depends on the earlier tokens and their positions, not only on the last token
        for model in built.values():
            ids = torch.tensor([[5, 17, 9]])
            last = model(input_ids=ids).logits[0, -1]
            assert not torch.allclose(last, model(input_ids=ids[:, 1:]).logits[0, -1], atol=0.5)
            assert not torch.allclose(last, model(input_ids=ids, position_ids=torch.tensor([[0, 3, 4]])).logits[0, -1],
                                      atol=0.5)
    return built


PROMPTS = [[5, 17, 9, 33, 21], [40], [8, 90, 12, 64, 7, 100, 3, 55, 71], [120, 6], [13, 13, 47]]
STOPS = tuple(range(2, 128, 9))  # 14 of the 128 ids stop, so that hypotheses finish at different steps


@pytest.mark.parametrize("name", ["gpt2", "llama", "gpt2-wrapped"])
@pytest.mark.parametrize("cfg", [
    BeamSearchConfig(num_beams=4, length_penalty=0.9, no_repeat_ngram_size=2, max_new_tokens=12, stop_token_ids=STOPS),
    BeamSearchConfig(num_beams=3, length_penalty=0.8, no_repeat_ngram_size=3, max_new_tokens=10, stop_token_ids=STOPS),
    BeamSearchConfig(num_beams=5, length_penalty=-0.5, no_repeat_ngram_size=1, max_new_tokens=8, stop_token_ids=STOPS),
], ids=["k4-lp0.9-ng2", "k3-lp0.8-ng3", "k5-lp-0.5-ng1"])
def test_matches_the_authors_loop(models, name, cfg):
    model = models[name]
    expected = [authors_beam(model, p, cfg) for p in PROMPTS]
    with torch.inference_mode():
        for early_stop in (True, False):
            # The keyword beam_search passes: `cache` from transformers 5.24, past_key_values before.
            got = _search_batch(model, PROMPTS, cfg, 0, torch.device("cpu"), _cache_keyword(model), early_stop=early_stop)
            assert [ids for ids, _ in got] == [ids for ids, _ in expected]
            assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-4)
    assert beam_search(model, PROMPTS, cfg, pad_token_id=0) == [ids for ids, _ in expected]
    # The cases exercise what they claim: some hypotheses stop early, and the ban changes some output.
    assert any(len(ids) < cfg.max_new_tokens for ids, _ in expected)
    unbanned = BeamSearchConfig(**{**cfg.__dict__, "no_repeat_ngram_size": 0})
    assert beam_search(model, PROMPTS, unbanned, pad_token_id=0) != [ids for ids, _ in expected]


@pytest.mark.parametrize("name", ["gpt2", "llama", "gpt2-wrapped"])
def test_batching_does_not_change_the_result(models, name):
    cfg = BeamSearchConfig(num_beams=4, length_penalty=0.9, no_repeat_ngram_size=2, max_new_tokens=12,
                           stop_token_ids=STOPS, batch_size=len(PROMPTS))
    together = beam_search(models[name], PROMPTS, cfg, pad_token_id=0)
    alone = [beam_search(models[name], [p], cfg, pad_token_id=0)[0] for p in PROMPTS]
    in_pairs = beam_search(models[name], PROMPTS, BeamSearchConfig(**{**cfg.__dict__, "batch_size": 2}), pad_token_id=0)
    assert together == alone == in_pairs
    assert len({len(ids) for ids in together}) > 1  # prompts finished at different steps


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_one_beam_is_greedy(models, name):
    model, max_new = models[name], 12
    cfg = BeamSearchConfig(num_beams=1, length_penalty=0.0, no_repeat_ngram_size=0, max_new_tokens=max_new,
                           stop_token_ids=STOPS)
    got = beam_search(model, PROMPTS, cfg, pad_token_id=0)

    by_hand = []
    with torch.no_grad():
        for prompt in PROMPTS:
            sequence = list(prompt)
            for _ in range(max_new):
                token = int(model(input_ids=torch.tensor([sequence])).logits[0, -1].argmax())
                if token in STOPS:
                    break
                sequence.append(token)
            by_hand.append(sequence[len(prompt):])

    by_hf = []
    for prompt in PROMPTS:
        out = model.generate(torch.tensor([prompt]), do_sample=False, num_beams=1, max_new_tokens=max_new,
                             eos_token_id=list(STOPS), pad_token_id=0)[0, len(prompt):].tolist()
        by_hf.append(next((out[:i] for i, t in enumerate(out) if t in STOPS), out))
    assert got == by_hand == by_hf
    assert any(len(ids) < max_new for ids in got)  # some prompt stopped


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_without_stops_and_bans_equals_hf_beam_search(models, name):
    # With no stop token and no ban HF's differences (finished hypotheses, ban, heuristics) vanish: both keep the top
    # num_beams of beams x vocabulary each step and return the best sum after max_new_tokens.
    model, max_new, k = models[name], 8, 3
    cfg = BeamSearchConfig(num_beams=k, length_penalty=0.9, no_repeat_ngram_size=0, max_new_tokens=max_new,
                           stop_token_ids=())
    got = beam_search(model, PROMPTS, cfg, pad_token_id=0)
    model.generation_config.eos_token_id = None
    by_hf = [model.generate(torch.tensor([p]), do_sample=False, num_beams=k, max_new_tokens=max_new, length_penalty=0.9,
                            pad_token_id=0)[0, len(p):].tolist() for p in PROMPTS]
    assert got == by_hf


# ----------------------------------------------------------------------------------------------------------------------
# Text, inputs, modes.


def test_decode_completion_cuts_at_stop_text_and_keeps_spaces(gpt2_tokenizer):
    tok = gpt2_tokenizer
    sentence = tok.encode(" A coffee shop in the city centre area called Blue Spice .")
    assert decode_completion(tok, sentence + [50256] + tok.encode(" more")) == (
        "A coffee shop in the city centre area called Blue Spice ."  # " ." kept: no tokenisation clean-up
    )
    assert tok.decode([628]) == "\n\n"
    assert decode_completion(tok, sentence + [628] + tok.encode("Next")) == (
        "A coffee shop in the city centre area called Blue Spice ."
    )
    assert decode_completion(tok, tok.encode(" a\n\nb")) == "a"
    assert decode_completion(tok, []) == ""


def test_bad_input_is_rejected_clearly():
    with pytest.raises(ValueError, match="num_beams"):
        BeamSearchConfig(num_beams=0)
    with pytest.raises(ValueError, match="no_repeat_ngram_size"):
        BeamSearchConfig(no_repeat_ngram_size=-1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        BeamSearchConfig(max_new_tokens=0)
    assert BeamSearchConfig(stop_token_ids=[5, 6]).stop_token_ids == (5, 6)
    model = TableLM(LENGTH_TABLE)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        beam_search(model, [[P], []], BeamSearchConfig(num_beams=2), pad_token_id=0)
    with pytest.raises(ValueError, match="pad_token_id"):
        beam_search(model, [[P]], BeamSearchConfig(num_beams=2), pad_token_id=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exceeds the model's vocabulary"):
        beam_search(model, [[P]], BeamSearchConfig(num_beams=7), pad_token_id=0)
    assert beam_search(model, [], BeamSearchConfig(), pad_token_id=0) == []


def test_training_mode_is_restored(models):
    model = models["gpt2"]
    model.train()
    try:
        beam_search(model, PROMPTS[:1], BeamSearchConfig(num_beams=2, max_new_tokens=3), pad_token_id=0)
        assert model.training
    finally:
        model.eval()
