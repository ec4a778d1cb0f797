"""Tokenisation and batching (lora_ft/data.py) with the real GPT-2 tokenizer (../shared/data/gpt2-tokenizer)."""

from __future__ import annotations

import pytest
import torch

from lora_ft.config import TaskConfig
from lora_ft.data import IGNORE_INDEX, CausalLMCollator, VirtualTokens, build_train_dataset, encode_example, encode_prompt
from lora_ft.tasks import get_task
from lora_ft.tasks.base import Example, TaskDataError

EOS = 50256

# paper.md, "E2E data format": the ids the authors' code produces for this example.
PAPER_CONTEXT = "name : Blue Spice | Type : coffee shop | area : city centre"
PAPER_TARGET = " A coffee shop in the city centre area called Blue Spice ."
PAPER_CONTEXT_IDS = [3672, 1058, 4518, 43537, 930, 5994, 1058, 6891, 6128, 930, 1989, 1058, 1748, 7372]
PAPER_TARGET_IDS = [317, 6891, 6128, 287, 262, 1748, 7372, 1989, 1444, 4518, 43537, 764]


@pytest.fixture(scope="module")
def tokenizer(shared_data_dir):
    from transformers import AutoTokenizer

    # The folder has no tokenizer_config.json: without eos_token the tokenizer would have no EOS at all.
    return AutoTokenizer.from_pretrained(str(shared_data_dir / "gpt2-tokenizer"), eos_token="<|endoftext|>")


def test_paper_example_encodes_to_the_papers_ids(tokenizer):
    encoded = encode_example(tokenizer, Example(PAPER_CONTEXT, PAPER_TARGET), separator_eos=True, max_length=512)
    assert encoded["input_ids"] == PAPER_CONTEXT_IDS + [EOS] + PAPER_TARGET_IDS + [EOS]
    assert encoded["labels"] == [IGNORE_INDEX] * 15 + PAPER_TARGET_IDS + [EOS]


def test_prompt_is_the_unlabelled_head_of_the_example(tokenizer):
    prompt = encode_prompt(tokenizer, PAPER_CONTEXT, separator_eos=True)
    assert prompt == PAPER_CONTEXT_IDS + [EOS]
    assert encode_prompt(tokenizer, PAPER_CONTEXT, separator_eos=False) == PAPER_CONTEXT_IDS


def test_loss_mask_covers_exactly_the_completion(tokenizer):
    example = Example("Premise.\nQuestion: Hypothesis. True, False, or Neither?\nAnswer:", " Neither")
    encoded = encode_example(tokenizer, example, separator_eos=False, max_length=64)
    target_ids = tokenizer.encode(" Neither", add_special_tokens=False)
    labelled = [i for i, label in enumerate(encoded["labels"]) if label != IGNORE_INDEX]
    n = len(encoded["input_ids"])
    assert labelled == list(range(n - len(target_ids) - 1, n))
    assert [encoded["input_ids"][i] for i in labelled] == target_ids + [EOS]
    assert tokenizer.decode(encoded["input_ids"][: labelled[0]]) == example.context  # no EOS separator


def test_virtual_tokens_land_before_the_context_and_before_the_target(tokenizer):
    virtual = VirtualTokens(prefix_ids=(50257, 50258), infix_ids=(50259,))
    encoded = encode_example(
        tokenizer, Example(PAPER_CONTEXT, PAPER_TARGET), separator_eos=True, max_length=512, virtual=virtual
    )
    assert encoded["input_ids"] == [50257, 50258] + PAPER_CONTEXT_IDS + [EOS, 50259] + PAPER_TARGET_IDS + [EOS]
    assert encoded["labels"] == [IGNORE_INDEX] * 18 + PAPER_TARGET_IDS + [EOS]
    prompt = encode_prompt(tokenizer, PAPER_CONTEXT, separator_eos=True, virtual=virtual)
    assert prompt == encoded["input_ids"][:18]


def test_overlong_example_is_an_error_with_its_length(tokenizer):
    with pytest.raises(TaskDataError, match=r"28 tokens long \(15 prompt \+ 13 completion\).*task.max_length = 27"):
        encode_example(tokenizer, Example(PAPER_CONTEXT, PAPER_TARGET), separator_eos=True, max_length=27)
    assert len(encode_example(tokenizer, Example(PAPER_CONTEXT, PAPER_TARGET), separator_eos=True, max_length=28)["input_ids"]) == 28


def test_tokenizer_without_eos_is_an_error():
    class NoEos:
        eos_token_id = None

        def encode(self, text, add_special_tokens=False):
            return [1, 2]

    with pytest.raises(TaskDataError, match="no EOS token"):
        encode_prompt(NoEos(), "x", separator_eos=True)


def test_collator_right_pads_and_masks_padding():
    collate = CausalLMCollator(pad_token_id=EOS)
    batch = collate(
        [
            {"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4]},
            {"input_ids": [5, 6], "labels": [-100, 6]},
        ]
    )
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4], [5, 6, EOS, EOS]]
    assert batch["labels"].tolist() == [[-100, -100, 3, 4], [-100, 6, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["input_ids"].dtype == torch.long
    assert collate([{"input_ids": [1], "labels": [1]}]).keys() == batch.keys()
    assert CausalLMCollator(pad_token_id=0, pad_to_multiple_of=8)([{"input_ids": [1], "labels": [1]}])["input_ids"].shape == (1, 8)


def test_build_train_dataset_tokenises_the_task_split(tokenizer, shared_data_dir):
    e2e = shared_data_dir / "e2e" / "valid.txt"
    task = get_task(TaskConfig(name="e2e", train_file=str(e2e), max_train_examples=20))
    dataset = build_train_dataset(tokenizer, task, "train", VirtualTokens(), max_length=512)
    assert len(dataset) == 20
    first = dataset[0]
    context_ids = tokenizer.encode("name : Alimentum | area : city centre | family friendly : no", add_special_tokens=False)
    assert first["input_ids"][: len(context_ids) + 1] == context_ids + [EOS]
    assert first["labels"][: len(context_ids) + 1] == [IGNORE_INDEX] * (len(context_ids) + 1)
    assert first["labels"][-1] == EOS
    batch = CausalLMCollator(pad_token_id=EOS)([dataset[i] for i in range(4)])
    assert batch["input_ids"].shape[0] == 4

    with pytest.raises(TaskDataError, match=r"e2e train example 0: example is \d+ tokens long.*raise task.max_length"):
        build_train_dataset(tokenizer, task, "train", VirtualTokens(), max_length=10)
