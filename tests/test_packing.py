"""Packed batches (lora_ft/packing.py) give the padded batch's loss and gradients, for every method and family, and
fall back to padding where packing would not be exact (tiny models, dropout 0: packed and padded draw dropout masks
over different layouts)."""

from __future__ import annotations

import pytest
import torch

from lora_ft.loss import completion_loss, completion_loss_per_example, completion_positions
from tiny_families import FAMILIES
from lora_ft.packing import ModelBatch, pack, packing_for, padded


def examples(tiny, method) -> dict[str, torch.Tensor]:
    """Three examples of different lengths, right-padded as the collator does: [prefix] context [infix] completion."""
    from lora_ft.data import CausalLMCollator

    prefix, infix = method.virtual_token_counts()
    virtual = list(range(tiny.vocab, tiny.vocab + prefix + infix))
    ids = tiny.ids(batch=3, length=11, seed=5).tolist()
    features = []
    for row, (context, completion) in zip(ids, [(4, 5), (2, 3), (6, 5)]):
        prompt = virtual[:prefix] + row[:context] + virtual[prefix:]
        target = row[context : context + completion]
        features.append({"input_ids": prompt + target, "labels": [-100] * len(prompt) + target})
    return CausalLMCollator(pad_token_id=0)(features)


def loss_and_grads(model, batch: ModelBatch, smoothing: float) -> tuple[torch.Tensor, int, list[torch.Tensor]]:
    model.zero_grad()
    with completion_positions(model, batch.labels, batch.example) as (targets, _rows):
        logits = model(**batch.inputs).logits
    loss_sum, tokens = completion_loss(logits, targets, smoothing)
    (loss_sum / tokens).backward()
    return loss_sum.detach(), int(tokens), [p.grad.clone() for p in model.parameters() if p.requires_grad]


def test_pack_lays_out_the_real_tokens_in_one_row(tiny):
    batch = {"input_ids": torch.tensor([[5, 6, 7], [8, 9, 0]]), "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
             "labels": torch.tensor([[-100, 6, 7], [8, 9, -100]])}
    packed = pack(batch)
    assert packed.inputs["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert packed.inputs["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert "attention_mask" not in packed.inputs  # transformers reads the restarting positions as separate sequences
    # an example's first token is never a target: the previous example's last position must not predict it
    assert packed.labels.tolist() == [[-100, 6, 7, -100, 9]]
    assert packed.example.tolist() == [[0, 0, 0, 1, 1]]
    assert padded(batch).example.tolist() == [[0, 0, 0], [1, 1, 1]]


def test_pack_fills_rows_of_bounded_width_in_order():
    lengths = [3, 2, 4, 1]
    width = max(lengths)
    ids = torch.tensor([[10 * i + j + 1 if j < n else 0 for j in range(width)] for i, n in enumerate(lengths)])
    mask = (ids > 0).long()
    labels = torch.where(mask.bool(), ids, -100)
    packed = pack({"input_ids": ids, "attention_mask": mask, "labels": labels}, row_tokens=5)
    # rows of up to 5 tokens: [3 + 2], [4 + 1]
    assert packed.inputs["input_ids"].tolist() == [[1, 2, 3, 11, 12], [21, 22, 23, 24, 31]]
    assert packed.inputs["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert packed.example.tolist() == [[0, 0, 0, 1, 1], [2, 2, 2, 2, 3]]
    packed = pack({"input_ids": ids, "attention_mask": mask, "labels": labels}, row_tokens=4)
    # [3], [2], [4], [1]? no: in order, a row takes the next example while it fits: [3], [2], [4], [1] -> [3], [2], [4, ...]
    assert packed.example.tolist() == [[0, 0, 0, -1], [1, 1, -1, -1], [2, 2, 2, 2], [3, -1, -1, -1]]
    # filler: position 0 (a sequence of its own), no label
    assert packed.inputs["position_ids"].tolist()[1] == [0, 1, 0, 0]
    assert packed.labels.tolist()[3] == [-100, -100, -100, -100]


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_loss_and_gradients_equal_the_padded_reference(tiny, family, method_name):
    model, method = tiny.adapt_for_training(family, method_name)
    packing = packing_for(model, "auto")
    if family == "opt":  # no exact packing: the trainer keeps padded batches (the fallback, asserted)
        assert not packing.active and "position_ids" in packing.reason
        assert packing(examples(tiny, method)).inputs.keys() == {"input_ids", "attention_mask", "use_cache"}
        return
    assert packing.active, packing.reason
    batch = examples(tiny, method)
    # rows of up to 32 tokens (the tiny hidden size): the prefix methods' longer examples fill two, the second with filler
    assert packing(batch).labels.shape[0] == (2 if sum(method.virtual_token_counts()) else 1)
    for smoothing in (0.0, 0.1):
        want_loss, want_tokens, want = loss_and_grads(model, padded(batch), smoothing)
        got_loss, got_tokens, got = loss_and_grads(model, packing(batch), smoothing)
        assert got_tokens == want_tokens == 13  # 5 + 3 + 5 completion tokens
        torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=0)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_eager_attention_packs_exactly_too(tiny, family):
    model, method, _ = tiny.adapt(family, "lora")
    model.set_attn_implementation("eager")
    tiny.perturb(model)
    model.train()
    assert packing_for(model, "auto").active
    batch = examples(tiny, method)
    want_loss, _, want = loss_and_grads(model, padded(batch), 0.1)
    got_loss, _, got = loss_and_grads(model, pack(batch), 0.1)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=0)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)


def test_packing_off_and_unsupported_attention_fall_back_to_padding(tiny):
    model, _, _ = tiny.adapt("gpt2", "lora")
    assert not packing_for(model, "off").active
    model.config._attn_implementation = "flash_attention_2"  # not tested exact here: padded
    packing = packing_for(model, "auto")
    assert not packing.active and "flash_attention_2" in packing.reason


def test_opt_would_not_pack_exactly(tiny):
    """Why OPT falls back: its mask ignores position_ids, so packed examples attend to each other."""
    model, method, _ = tiny.adapt("opt", "lora")
    tiny.perturb(model)
    batch = examples(tiny, method)
    with torch.no_grad():
        with completion_positions(model, batch["labels"]) as (targets, _):
            padded_loss = completion_loss(model(**padded(batch).inputs).logits, targets, 0.0)[0]
        packed = pack(batch)
        with completion_positions(model, packed.labels) as (targets, _):
            packed_loss = completion_loss(model(**packed.inputs).logits, targets, 0.0)[0]
    assert abs(float(packed_loss) - float(padded_loss)) > 1e-4 * abs(float(padded_loss))


def test_packed_validation_sums_per_example(tiny):
    model, method, _ = tiny.adapt("llama", "prelayer")
    tiny.perturb(model)
    batch = examples(tiny, method)
    sums = []
    with torch.no_grad():
        for layout in (padded(batch), pack(batch)):
            with completion_positions(model, layout.labels, layout.example) as (targets, rows):
                logits = model(**layout.inputs).logits
            sums.append(completion_loss_per_example(logits, targets, rows, 3))
    torch.testing.assert_close(sums[1][0], sums[0][0], rtol=1e-5, atol=0)
    assert sums[1][1].tolist() == sums[0][1].tolist() == [5, 3, 5]


def test_a_packed_run_trains_the_padded_runs_weights(tmp_path):
    """The trainer end to end (tiny GPT-2, real E2E rows, LoRA dropout 0): packing, and gradient checkpointing with
    it, change no loss and no weight."""
    from lora_ft.checkpoint import read_trained
    from lora_ft.config import config_from_dict
    from lora_ft.results import read_results
    from lora_ft.train import train
    from tiny_runs import tiny_run_config

    runs = {}
    for name, packing, checkpointing in (("padded", "off", False), ("packed", "auto", False), ("both", "auto", True)):
        config = tiny_run_config(tmp_path / name, epochs=1, packing=packing, gradient_checkpointing=checkpointing)
        config["method"]["dropout"] = 0.0
        run_dir = train(config_from_dict(config))
        runs[name] = (read_results(run_dir), read_trained(run_dir)[0])
    reference, reference_weights = runs.pop("padded")
    assert reference.extra["batches"].startswith("padded")
    for results, weights in runs.values():
        assert results.extra["batches"].startswith("packed")
        for got, want in zip(results.epochs, reference.epochs, strict=True):
            assert got.train_loss == pytest.approx(want.train_loss, rel=1e-5)
            assert got.validation_loss == pytest.approx(want.validation_loss, rel=1e-5)
        for name, tensor in reference_weights.items():
            torch.testing.assert_close(weights[name], tensor, rtol=1e-4, atol=1e-6)


def test_packing_and_checkpointing_may_change_on_resume(tmp_path):
    """Neither changes the numbers (dropout masks aside), so --resume accepts a change and records it."""
    import yaml

    from lora_ft.config import config_from_dict
    from lora_ft.resume import check_resume_config
    from tiny_runs import tiny_run_config

    config = tiny_run_config(tmp_path / "run", packing="off")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    given = config_from_dict(tiny_run_config(tmp_path / "run", gradient_checkpointing=True)).to_dict()
    assert check_resume_config(tmp_path / "config.yaml", given) == {
        "training.packing": ("off", "auto"), "training.gradient_checkpointing": (False, True)}
