"""Batched beam search that decodes exactly as the LoRA authors did for E2E (microsoft/LoRA, examples/NLG/src/gpt2_beam.py).

The authors' rules, which this module reproduces (paper.md, "E2E decoding and scoring", agrees with them):
- Every step keeps the `num_beams` best continuations of all beams x vocabulary by summed log-prob; the first step expands
  the prompt's single distribution.
- No-repeat n-gram: a token is banned when it would complete an n-gram that already occurs among the hypothesis's GENERATED
  tokens (the prompt is not looked at). Banned logits become -inf BEFORE the softmax, so the log-probs of the remaining
  tokens are renormalised.
- A kept continuation that ends in a stop token is finished. Its score, sum of log-probs / (generated length incl. the stop
  token) ** length_penalty, competes for the single best finished hypothesis of its prompt (on a tie the earlier one stays).
  Its beam slot is then dead (score -inf) for the next step: lower-ranked continuations do not take its place.
- After `max_new_tokens` steps the still-running beams compete too, scored with length `max_new_tokens`.

How Hugging Face's `generate(num_beams=...)` (transformers 5.24) differs, so it cannot be used here: it bans n-grams over
prompt + generated tokens for decoder-only models, after the log-softmax (no renormalisation); it keeps 2 x num_beams
continuations so a finished one never costs a beam slot; and it stops on a heuristic. Its length normalisation is the same
formula (sum of log-probs incl. EOS / (generated length incl. EOS) ** length_penalty).

The authors always run `max_new_tokens` steps. We stop a prompt as soon as no running beam can beat its best finished
hypothesis any more (`_can_win`); this bound is exact, so the outputs are those of the full run.

What makes it faster than `generate` with the same outputs: the prompt runs once per prompt, not once per beam, with the
LM head on its last position only, and its keys and values are kept once per prompt, shared by its beams (the attention
reads them once for all beams; lora_ft/beam_cache.py); a step writes one position into preallocated buffers and a
reorder copies only the generated positions; a decided prompt leaves the batch, and a hypothesis that can no longer
win leaves the model's input (`_can_win`); each beam ranks only its own best num_beams tokens (`_row_top_k` on the
CPU); n-grams are banned by index; one host sync per step. On the CPU the linear layers also run on oneDNN's
prepacked weights (lora_ft/onednn_linear.py): a kernel choice, not a search one; scripts/bench_decoding.py reports it
apart.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from . import beam_cache, console, onednn_linear

logger = logging.getLogger("lora_ft.generate")

NEG_INF = float("-inf")


@dataclass(frozen=True)
class BeamSearchConfig:
    """Decoding settings; the defaults are the paper's E2E settings for GPT-2 (Table 11)."""

    num_beams: int = 10
    length_penalty: float = 0.9  # paper Table 11; the authors' README uses 0.8
    no_repeat_ngram_size: int = 4  # over the generated tokens only; 0 turns it off
    max_new_tokens: int = 64
    stop_token_ids: tuple[int, ...] = (50256, 628)  # <|endoftext|> and "\n\n" for GPT-2
    batch_size: int = 16  # prompts decoded together

    def __post_init__(self) -> None:
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")
        if self.no_repeat_ngram_size < 0:
            raise ValueError(f"no_repeat_ngram_size must be >= 0 (0 turns it off), got {self.no_repeat_ngram_size}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not math.isfinite(self.length_penalty):
            raise ValueError(f"length_penalty must be a finite number, got {self.length_penalty}")
        stops = tuple(int(t) for t in self.stop_token_ids)  # a list from YAML/JSON becomes a (hashable) tuple
        if any(t < 0 for t in stops):
            raise ValueError(f"stop_token_ids must be token ids >= 0, got {stops}")
        object.__setattr__(self, "stop_token_ids", stops)


def beam_search(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    config: BeamSearchConfig,
    *,
    pad_token_id: int,
    device: torch.device | str | None = None,
    progress: bool = False,
    prepack_linears: bool = True,
) -> list[list[int]]:
    """Decode every prompt with the authors' beam search; return the best hypothesis's generated ids (stop token excluded).

    `model` is any causal LM whose forward takes (input_ids, attention_mask, position_ids, cache or past_key_values,
    use_cache) and returns an object with `.logits` and a KV cache (`.cache` or `.past_key_values`): a transformers
    `DynamicCache`, or nested tuples of tensors whose first dimension is the batch. Prompts are left-padded with
    `pad_token_id` (any id: padded positions are masked) and decoded `config.batch_size` at a time; the result does not
    depend on the batching. `device` (where the inputs go) defaults to the device of the model's first parameter.
    On the CPU the model's float32 linear layers run on oneDNN's prepacked weights while it decodes
    (lora_ft/onednn_linear.py; `prepack_linears=False`: PyTorch's own linear, for comparison).
    """
    if pad_token_id is None:
        raise ValueError("pad_token_id is None; pass any valid token id (e.g. the EOS id): padded positions are masked")
    prompts = [list(p) for p in prompts]
    for i, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(f"prompt {i} is empty; beam search needs at least one prompt token to condition on")
    device = torch.device(device) if device is not None else _model_device(model)
    cache_keyword = _cache_keyword(model)

    # Longest prompts first: less padding within a batch, and an out-of-memory error shows up in the first batch.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    batches = [order[start : start + config.batch_size] for start in range(0, len(order), config.batch_size)]
    results: list[list[int]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    start, done = time.monotonic(), 0
    try:
        with torch.inference_mode(), _cpu_linears(model, device, prepack_linears):
            for batch in tqdm(batches, desc="beam search", unit="batch", disable=not (progress and console.progress_bars())):
                decoded = _search_batch(model, [prompts[i] for i in batch], config, pad_token_id, device, cache_keyword)
                for i, (ids, _score) in zip(batch, decoded):
                    results[i] = ids
                done += len(batch)
                if progress:  # `lora-ft -v eval`: a line per batch, as `-v train` prints its steps (the bar is off in a log)
                    rate = done / max(time.monotonic() - start, 1e-9)
                    logger.info("beam search: %d/%d items, %.2f items/s", done, len(prompts), rate)
    finally:
        model.train(was_training)
    return results


def _cpu_linears(model: nn.Module, device: torch.device, prepack: bool) -> Any:
    return onednn_linear.prepacked_linears(model) if prepack and device.type == "cpu" else contextlib.nullcontext()


def decode_completion(tokenizer: Any, token_ids: Sequence[int], *, blank_line_ends: bool = True) -> str:
    """The text of generated ids, cut at the first "<|endoftext|>" (or the tokenizer's EOS) or, with
    `blank_line_ends` (the authors' E2E rule), "\\n\\n"; stripped. One-line tasks pass False: their text may start
    with a blank line, and `Task.end_completion` keeps the first line with text."""
    # No clean-up of tokenisation spaces: E2E references are space-tokenised ("centre ."), and so were the authors' outputs.
    text = tokenizer.decode(list(token_ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)
    markers = ["<|endoftext|>", "\n\n"] if blank_line_ends else ["<|endoftext|>"]
    if isinstance(getattr(tokenizer, "eos_token", None), str) and tokenizer.eos_token:
        markers.append(tokenizer.eos_token)
    for marker in markers:
        text = text.split(marker, 1)[0]
    return text.strip()


def _search_batch(
    model: nn.Module,
    prompts: list[list[int]],
    config: BeamSearchConfig,
    pad_token_id: int,
    device: torch.device,
    cache_keyword: str,
    early_stop: bool = True,
) -> list[tuple[list[int], float]]:
    """Beam search for one batch of prompts; returns (generated ids, normalised score) per prompt, in order.

    `early_stop=False` runs all `max_new_tokens` steps with every hypothesis, as the authors did (tests check both give
    the same result).
    """
    num_beams, max_new = config.num_beams, config.max_new_tokens
    ngram, penalty = config.no_repeat_ngram_size, config.length_penalty
    input_ids, attention_mask, position_ids = _left_pad(prompts, pad_token_id, device)
    stop_ids = torch.tensor(config.stop_token_ids, dtype=torch.long, device=device)

    # Only the last position's logits are used: where the model can skip the others (transformers' logits_to_keep),
    # the prompt pass runs the LM head on one position instead of the whole prompt.
    last_only = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                **{cache_keyword: None}, **last_only)
    logits, cache = out.logits[:, -1, :], _returned_cache(out)
    vocab = logits.shape[-1]
    if num_beams > vocab:
        raise ValueError(f"num_beams ({num_beams}) exceeds the model's vocabulary ({vocab}); lower num_beams")

    # Per active prompt (A of them). Slots are the hypotheses, prompt-major: one per prompt after the prompt pass,
    # `num_beams` per prompt afterwards (`history` and the scores have one row per slot). Rows of `logits`, the cache,
    # the mask and the positions are the slots that went through the model: all of them (`live` None), or with
    # early_stop only the `live` slots, those of a running hypothesis that can still win (`_can_win`); a slot left out
    # can only be a dead or a losing hypothesis, whose continuations are never chosen over one that can win.
    active = len(prompts)
    prompt_index = torch.arange(active, device=device)  # position in `prompts` of each active prompt
    beam_scores = torch.zeros(active, 1, device=device)  # summed log-probs of the running beams
    history = torch.empty(active, 0, dtype=torch.long, device=device)  # generated tokens of each slot
    next_position = attention_mask.sum(dim=1)  # position id of each row's next input token
    best = _Best(active, max_new, device)
    results: list[tuple[list[int], float] | None] = [None] * active
    live: torch.Tensor | None = None

    scratch: dict[str, torch.Tensor] = {}  # one rows x vocabulary buffer for the log-probs of every step
    for step in range(max_new):
        generated = step + 1  # the generated length of this step's continuations
        logits = logits.float()  # scores in fp32 whatever the model's dtype, as the authors' fp32 decoding
        if ngram > 0:
            _ban_repeated_ngrams_(logits, history if live is None else history[live], ngram)
        log_probs = torch.log_softmax(logits, dim=-1, out=_scratch(scratch, logits))
        # The best `num_beams` continuations of all beams are among each beam's own best `num_beams` tokens (a beam's
        # summed score shifts all its candidates alike), so rank those: beams x num_beams candidates per prompt
        # instead of beams x vocabulary (the same values, the same sums, no full-vocabulary addition or ranking).
        row_best, row_tokens = _row_top_k(log_probs, num_beams)
        # A row whose every token is banned (only possible with a vocabulary smaller than the output) gives NaN: make
        # it -inf so that it can never be chosen.
        row_best = row_best.nan_to_num_(nan=NEG_INF)
        rows_per_prompt = beam_scores.shape[1]
        if live is not None:  # the slots left out have no continuation that can be chosen over one that can win
            every_slot = (active * rows_per_prompt, num_beams)
            row_best = row_best.new_full(every_slot, NEG_INF).index_copy_(0, live, row_best)
            row_tokens = row_tokens.new_zeros(every_slot).index_copy_(0, live, row_tokens)
        candidates = (beam_scores[:, :, None] + row_best.view(active, rows_per_prompt, num_beams)).view(active, -1)
        top_scores, top_index = candidates.topk(num_beams, dim=1)  # sorted, best first, like the authors'
        source_slots = torch.arange(active, device=device)[:, None] * rows_per_prompt + top_index // num_beams
        tokens = row_tokens.view(active, -1).gather(1, top_index)
        history = torch.cat([history[source_slots.view(-1)], tokens.view(-1, 1)], dim=1)

        finished = torch.isin(tokens, stop_ids)
        best.offer(top_scores, finished, history, generated, penalty, drop_last=True)
        beam_scores = top_scores.masked_fill(finished, NEG_INF)  # a finished hypothesis leaves the beam

        if step == max_new - 1:  # out of steps: the running beams compete as they are
            best.offer(beam_scores, torch.ones_like(finished), history, generated, penalty, drop_last=False)
            done, can_win = torch.ones(active, dtype=torch.bool, device=device), None
        elif early_stop:
            can_win = _can_win(beam_scores, best.score, generated, max_new, penalty)
            done = best.found & ~can_win.any(dim=1)
        else:
            done, can_win = torch.zeros(active, dtype=torch.bool, device=device), None

        # The one host sync per step: which prompts are decided (they leave the batch) and which slots can win.
        flags = (torch.cat([done, can_win.view(-1)]) if can_win is not None else done).tolist()
        done_flags, win_flags = flags[:active], flags[active:]
        previous_slots = active * rows_per_prompt  # the slot layout `live` refers to
        compacted = any(done_flags)
        if compacted:
            for i, ids, score in best.take(done, prompt_index):
                results[i] = (ids, score)
            if all(done_flags):
                break
            kept = torch.tensor([i for i, decided in enumerate(done_flags) if not decided], device=device)
            prompt_index, beam_scores, source_slots, tokens = (
                prompt_index[kept], beam_scores[kept], source_slots[kept], tokens[kept]
            )
            history = history.view(active, num_beams, -1)[kept].flatten(0, 1)
            best.keep(kept)
            win_flags = [flag for slot, flag in enumerate(win_flags) if not done_flags[slot // num_beams]]
            active = len(kept)

        # The slots that go through the model next (None: all), and the row of this step's input each continues.
        next_live = None
        if any(win_flags) and not all(win_flags):
            next_live = torch.tensor([slot for slot, flag in enumerate(win_flags) if flag], device=device)
        continued = source_slots.view(-1) if next_live is None else source_slots.view(-1)[next_live]
        if live is None:
            rows = continued
        else:
            row_of_slot = torch.full((previous_slots,), -1, dtype=torch.long, device=device)
            row_of_slot[live] = torch.arange(live.shape[0], device=device)
            rows = row_of_slot[continued]
        live = next_live
        if step == 0:  # one row per prompt becomes num_beams hypotheses sharing its prompt; room for every later token
            cache = beam_cache.expand(model, cache, rows, prompts=source_slots[:, 0], beams=num_beams,
                                      new_tokens=max_new, prompt_mask=attention_mask, slots=live)
        else:  # each hypothesis continues one of its own prompt's
            cache = beam_cache.reorder(cache, rows, prompts=kept if compacted else None, slots=live)
        attention_mask = torch.cat([attention_mask[rows], attention_mask.new_ones(rows.shape[0], 1)], dim=1)
        next_position = next_position[rows]
        step_tokens = tokens.view(-1) if live is None else tokens.view(-1)[live]
        out = logits = log_probs = None  # free this step's logits before the model allocates the next ones (same size)
        out = beam_cache.forward(model, cache, input_ids=step_tokens[:, None], attention_mask=attention_mask,
                                 position_ids=next_position[:, None], use_cache=True, **{cache_keyword: cache})
        logits, cache = out.logits[:, -1, :], _returned_cache(out)
        next_position = next_position + 1

    assert all(r is not None for r in results), "every prompt is decided by the last step"
    return results  # type: ignore[return-value]


class _Best:
    """The best finished hypothesis of each active prompt, kept on the device (no host sync per step)."""

    def __init__(self, prompts: int, max_new: int, device: torch.device):
        self.found = torch.zeros(prompts, dtype=torch.bool, device=device)
        self.score = torch.full((prompts,), NEG_INF, device=device)
        self.tokens = torch.zeros(prompts, max_new, dtype=torch.long, device=device)
        self.length = torch.zeros(prompts, dtype=torch.long, device=device)  # how many of `tokens` to return

    def offer(self, scores: torch.Tensor, eligible: torch.Tensor, history: torch.Tensor, generated: int,
              penalty: float, drop_last: bool) -> None:
        """Offer the `eligible` hypotheses (prompts x beams) with summed log-probs `scores` and tokens `history`.

        As the authors' `_add_beam_candidate`, which walks the beams in order: the best normalised score replaces the
        kept one only if it is strictly higher (or nothing is kept yet); among equal scores the first beam wins.
        """
        normalised = _normalise(scores, generated, penalty).masked_fill(~eligible, NEG_INF)
        step_best, beam = normalised.max(dim=1)  # max returns the first index of equal maxima
        # If every eligible score is -inf, max may point at a non-eligible beam; the authors' walk takes the first one.
        beam = torch.where(step_best == NEG_INF, eligible.int().argmax(dim=1), beam)
        better = eligible.any(dim=1) & (~self.found | (step_best > self.score))
        rows = torch.arange(scores.shape[0], device=scores.device) * scores.shape[1] + beam
        self.tokens[:, :generated] = torch.where(better[:, None], history[rows], self.tokens[:, :generated])
        self.score = torch.where(better, step_best, self.score)
        self.length = torch.where(better, generated - int(drop_last), self.length)  # the stop token is not returned
        self.found = self.found | better

    def take(self, done: torch.Tensor, prompt_index: torch.Tensor) -> list[tuple[int, list[int], float]]:
        """(prompt index, ids, score) of the `done` prompts, copied to the host."""
        indices = prompt_index[done].tolist()
        tokens, lengths, scores = self.tokens[done].tolist(), self.length[done].tolist(), self.score[done].tolist()
        return [(i, t[:n], s) for i, t, n, s in zip(indices, tokens, lengths, scores)]

    def keep(self, keep: torch.Tensor) -> None:
        """Only the prompts `keep` (indices or a mask) stay."""
        self.found, self.score, self.tokens, self.length = (
            self.found[keep], self.score[keep], self.tokens[keep], self.length[keep]
        )


_BLOCK = 64  # columns per block in `_row_top_k` (the fastest of 64 to 1024 on a 50k vocabulary)


def _row_top_k(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`values.topk(k, dim=1)` (each row's k largest values, best first, and their columns), faster on the CPU.

    The CPU's topk walks every column through a heap; here each row's blocks of `_BLOCK` columns are ranked by their
    maximum (a fast vectorised reduction) and only the k best blocks, plus the columns after the last whole block, are
    ranked. Exact: if the j-th largest value v of a row lies in a block that is not kept, each of the k kept blocks has
    a maximum >= v, so the kept columns hold at least j values >= v; hence the kept columns' k largest values are the
    row's. The values are torch.topk's; among equal values the column may differ (torch.topk's choice among ties is
    unspecified too).
    """
    rows, width = values.shape
    blocks = width // _BLOCK
    if values.device.type != "cpu" or blocks < 8 * k:  # the GPU's topk is fast already; few blocks: no gain
        return values.topk(k, dim=1)
    whole = blocks * _BLOCK
    by_block = values[:, :whole].view(rows, blocks, _BLOCK)
    best_blocks = by_block.amax(dim=2).topk(k, dim=1).indices  # rows x k
    kept = by_block.gather(1, best_blocks[:, :, None].expand(rows, k, _BLOCK)).view(rows, k * _BLOCK)
    top, position = torch.cat([kept, values[:, whole:]], dim=1).topk(k, dim=1)
    in_block = position < k * _BLOCK
    block_column = best_blocks.gather(1, (position // _BLOCK).clamp(max=k - 1)) * _BLOCK + position % _BLOCK
    return top, torch.where(in_block, block_column, whole + position - k * _BLOCK)


def _scratch(scratch: dict[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """A tensor shaped like `like` backed by one buffer reused across steps (rows only shrink after the first steps)."""
    buffer = scratch.get("buffer")
    if buffer is None or buffer.numel() < like.numel() or buffer.dtype != like.dtype or buffer.device != like.device:
        buffer = scratch["buffer"] = torch.empty(like.numel(), dtype=like.dtype, device=like.device)
    return buffer[: like.numel()].view(like.shape)


def _normalise(scores: torch.Tensor, generated: int, penalty: float) -> torch.Tensor:
    """sum of log-probs / generated length ** length_penalty (the length counts the stop token)."""
    return scores / (float(generated) ** penalty)


def _can_win(beam_scores: torch.Tensor, best_score: torch.Tensor, generated: int, max_new: int,
             penalty: float) -> torch.Tensor:
    """Whether each running beam (prompts x beams) could still beat its prompt's best finished score (strictly, as the
    authors); with nothing finished yet (-inf) every running beam can.

    Any later candidate of a running beam has a summed log-prob <= the beam's current one s <= 0 (log-probs are <= 0)
    and a length L in (generated, max_new], so its score is <= s / L ** penalty, which is monotone in L: the larger of
    its values at L = generated + 1 and L = max_new bounds every later score. Dead beams (-inf) bound nothing.
    Both the bound and a finishing score grow with s, so each continuation of a beam that cannot win has a lower summed
    score than any candidate that still can: leaving such beams out of the model (their continuations -inf) changes
    no candidate that can win, nor its rank, nor the result.
    """
    bound = torch.maximum(_normalise(beam_scores, generated + 1, penalty), _normalise(beam_scores, max_new, penalty))
    return bound > best_score[:, None]


def _ban_repeated_ngrams_(logits: torch.Tensor, history: torch.Tensor, n: int) -> None:
    """In place: -inf for each row's tokens that would repeat an n-gram of that row's generated tokens `history`.

    The authors' (fairseq's) `_calc_banned_ngram_tokens`, done with tensor ops over all rows at once: a token is banned
    after the last n-1 generated tokens if it followed the same n-1 tokens earlier. O(rows x generated x n) per step.
    """
    rows, length = history.shape
    if length < n:  # no complete n-gram yet
        return
    if n == 1:
        logits.scatter_(1, history, NEG_INF)
        return
    windows = history[:, : length - 1].unfold(1, n - 1, 1)  # window j = history[j : j + n - 1], j = 0 .. length - n
    suffix = history[:, length - n + 1 :]  # the last n - 1 generated tokens
    matches = (windows == suffix[:, None, :]).all(dim=2)
    followers = history[:, n - 1 :]  # the token after window j
    # Lower the banned (row, token) pairs to -inf and leave the others (min with +inf), by index, not through a rows x
    # vocabulary mask; no `nonzero`, so no wait for the device. A minimum is exact in any order.
    ban = torch.full(followers.shape, float("inf"), dtype=logits.dtype, device=logits.device)
    ban.masked_fill_(matches, NEG_INF)
    logits.scatter_reduce_(1, followers, ban, reduce="amin")


def _left_pad(prompts: list[list[int]], pad_token_id: int, device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded ids, attention mask and position ids (0 at each prompt's first real token, as without padding)."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), int(pad_token_id), dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        input_ids[i, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[i, width - len(prompt) :] = 1
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return input_ids.to(device), attention_mask.to(device), position_ids.to(device)


def _model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a model with neither."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _accepts(model: nn.Module, keyword: str) -> bool:
    """Whether the model's forward names `keyword` (a wrapper taking **kwargs may not pass it on: not assumed)."""
    return keyword in inspect.signature(model.forward).parameters


def _cache_keyword(model: nn.Module) -> str:
    """The forward keyword of the KV cache: `cache` since transformers 5 (`past_key_values` is deprecated there)."""
    parameters = inspect.signature(model.forward).parameters
    if "cache" in parameters:
        return "cache"
    if "past_key_values" in parameters:
        return "past_key_values"
    return "cache"  # a wrapper passing **kwargs through to a transformers >= 5 model (e.g. peft's PeftModel)


def _returned_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    if cache is None:
        cache = getattr(out, "past_key_values", None)
    if cache is None:
        raise RuntimeError(
            "the model returned no KV cache (neither .cache nor .past_key_values); beam_search needs a model that "
            "supports use_cache=True"
        )
    return cache
