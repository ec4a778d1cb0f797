"""Tokenisation and batching: a task's text examples become token ids with a loss mask on the completion only.

One example is laid out as
    input_ids = prefix_ids + bpe(context) + ([eos] if separator_eos) + infix_ids + bpe(target) + [eos]
    labels    = -100 everywhere except bpe(target) + [eos]
Context and target are encoded separately, so the loss boundary is exact; the target carries its leading space.
This module knows tasks (their text) but not methods: a prefix method only says which virtual ids to put where.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from .tasks.base import Example, Task, TaskDataError

IGNORE_INDEX = -100  # torch.nn.CrossEntropyLoss's default ignore_index


@dataclass(frozen=True)
class VirtualTokens:
    """Slots a prefix method needs: ids >= the base vocabulary size, before the context and between context and target."""

    prefix_ids: tuple[int, ...] = ()
    infix_ids: tuple[int, ...] = ()


def _bpe(tokenizer, text: str) -> list[int]:
    # No special tokens: the layout above says exactly where EOS goes, and some tokenizers would add a BOS.
    return list(tokenizer.encode(text, add_special_tokens=False))


def _eos_id(tokenizer) -> int:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise TaskDataError(
            "the tokenizer has no EOS token; load it with eos_token set (GPT-2: '<|endoftext|>', id 50256)"
        )
    return int(eos)


def encode_prompt(
    tokenizer, context: str, *, separator_eos: bool, virtual: VirtualTokens = VirtualTokens(), max_tokens: int | None = None
) -> list[int]:
    """The ids a decoder is primed with: prefix_ids + bpe(context) + ([eos] if separator_eos) + infix_ids.

    With `max_tokens`, a longer prompt loses the first tokens of its context (never the virtual tokens or the separator):
    the end of the context is what leads into the completion."""
    context_ids = _bpe(tokenizer, context)
    tail = ([_eos_id(tokenizer)] if separator_eos else []) + list(virtual.infix_ids)
    if max_tokens is not None:
        room = max(max_tokens - len(virtual.prefix_ids) - len(tail), 0)
        context_ids = context_ids[len(context_ids) - room:] if len(context_ids) > room else context_ids
    return list(virtual.prefix_ids) + context_ids + tail


def encode_example(
    tokenizer, example: Example, *, separator_eos: bool, max_length: int, virtual: VirtualTokens = VirtualTokens()
) -> dict[str, list[int]]:
    """`input_ids` and `labels` of one training example (see the module docstring for the layout).

    An example longer than `max_length` tokens is an error, not truncated: cutting the target would teach the model
    to stop mid-sentence without an EOS.
    """
    prompt = encode_prompt(tokenizer, example.context, separator_eos=separator_eos, virtual=virtual)
    completion = _bpe(tokenizer, example.target) + [_eos_id(tokenizer)]
    length = len(prompt) + len(completion)
    if length > max_length:
        raise TaskDataError(
            f"example is {length} tokens long ({len(prompt)} prompt + {len(completion)} completion), more than "
            f"task.max_length = {max_length}; raise task.max_length (e.g. task.max_length={length}) or drop the example"
        )
    return {"input_ids": prompt + completion, "labels": [IGNORE_INDEX] * len(prompt) + completion}


class CausalLMCollator:
    """Right-pads a batch: input_ids with `pad_token_id`, labels with -100, attention_mask 1 on real tokens, and
    `lengths`, each example's token count as Python ints: packing (packing.py) lays out a batch from them without
    reading the mask back from the GPU (a device sync every step)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        if pad_token_id is None:
            raise ValueError("pad_token_id is None; set the tokenizer's pad token (e.g. to its EOS token)")
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not features:
            raise ValueError("cannot collate an empty batch")
        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        n = len(features)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((n, width), dtype=torch.long)
        for row, f in enumerate(features):
            length = len(f["input_ids"])
            input_ids[row, :length] = torch.as_tensor(f["input_ids"], dtype=torch.long)
            labels[row, :length] = torch.as_tensor(f["labels"], dtype=torch.long)
            attention_mask[row, :length] = 1
        lengths = [len(f["input_ids"]) for f in features]
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask, "lengths": lengths}


class EncodedDataset(Dataset):
    """Pre-tokenised examples held in a list (tokenised once, at construction)."""

    def __init__(self, encoded: list[dict[str, list[int]]]):
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.encoded[index]

    def num_tokens(self) -> int:
        return sum(len(e["input_ids"]) for e in self.encoded)


def build_train_dataset(tokenizer, task: Task, split: str, virtual: VirtualTokens, max_length: int) -> EncodedDataset:
    """The task's `split`, tokenised for teacher-forced training (or a validation loss)."""
    examples = task.load(split)
    encoded = []
    for index, example in enumerate(examples):
        try:
            encoded.append(
                encode_example(tokenizer, example, separator_eos=task.separator_eos, max_length=max_length, virtual=virtual)
            )
        except TaskDataError as exc:
            raise TaskDataError(f"{task.name} {split} example {index}: {exc}") from exc
    return EncodedDataset(encoded)


def virtual_tokens_for(method, model) -> VirtualTokens:
    """The ids of a prefix method's virtual tokens: the ones just past the model's real vocabulary."""
    prefix, infix = method.virtual_token_counts()
    vocab = model.config.vocab_size
    return VirtualTokens(
        prefix_ids=tuple(range(vocab, vocab + prefix)), infix_ids=tuple(range(vocab + prefix, vocab + prefix + infix))
    )
