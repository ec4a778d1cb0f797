"""Issue 17 probe cases ("what a careful user still hits"): exports and reproducibility.

Each test is one reviewer's observation on main at the time (items 1, 4, 5, 12 and the export part of 15), written to
fail there and pass once fixed; kept so that the next probe starts from them.
"""

from __future__ import annotations

import errno
import json
import shutil

import pytest
import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM

from lora_ft.atomic import DiskFullError
from lora_ft.build import adapted_model
from lora_ft.checkpoint import save_trained
from lora_ft.config import config_from_dict, load_config
from lora_ft.data import CausalLMCollator, VirtualTokens, build_train_dataset, virtual_tokens_for
from lora_ft.errors import UserError
from lora_ft.evaluate import evaluate_run
from lora_ft.export import ExportError, export_run
from lora_ft.loss import full_logits_loss
from lora_ft.models.loading import load_tokenizer
from lora_ft.results import Evaluation, EpochRecord, RunResults, read_results, write_results
from lora_ft.run_dir import CONFIG_FILE
from lora_ft.tasks import get_task
from lora_ft.train import train
from tiny_runs import tiny_run_config

pytestmark = pytest.mark.usefixtures("one_thread")


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    """A trained two-epoch LoRA run on a random-weight tiny GPT-2 (model.random_init), with epoch checkpoints."""
    return train(config_from_dict(tiny_run_config(tmp_path_factory.mktemp("item1") / "run")))


def folder_run(tmp_path, tiny, model_dir, tokenizer_dir, method="lora", **method_kwargs):
    """A run directory on a tiny pretrained base saved in `model_dir` (the name the user gives): its config.yaml and
    trained.safetensors (perturbed tensors stand in for training). Returns (run_dir, the model as trained)."""
    run_dir = tmp_path / "run"
    cfg = config_from_dict({
        "model": {"name_or_path": str(model_dir), "tokenizer": str(tokenizer_dir)},
        "task": {"name": "e2e"},
        "method": {"name": method, **(method_kwargs if method != "lora" else {"rank": 2, "alpha": 8.0, "targets": ["q", "v"]})},
        "output": {"dir": str(run_dir)},
    })
    built = adapted_model(cfg)
    tiny.perturb(built.model, std=0.2)
    save_trained(built.model, built.method, run_dir)
    (run_dir / CONFIG_FILE).write_text(cfg.to_yaml())
    return run_dir, built.model.eval()


def validation_loss(model, run_dir, virtual: VirtualTokens = VirtualTokens()) -> float:
    """The run's validation loss computed on `model` without lora-ft's training code (token mean over completions)."""
    cfg = load_config(run_dir / CONFIG_FILE)
    tokenizer = load_tokenizer(cfg.model)
    data = build_train_dataset(tokenizer, get_task(cfg.task), "validation", virtual, cfg.task.max_length)
    total, count = 0.0, 0
    for batch in DataLoader(data, batch_size=4, collate_fn=CausalLMCollator(tokenizer.pad_token_id)):
        with torch.no_grad():
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss, tokens = full_logits_loss(out, batch["labels"], 0.0)
        total, count = total + float(loss), count + int(tokens)
    return total / count


# ----------------------------------------------------------------------------------------------------------- item 1


def test_item1_random_init_eval_is_reproducible(random_run):
    def final_predictions():
        (evaluation,) = evaluate_run(random_run, meteor=False)
        return (random_run / evaluation.predictions_file).read_text()

    first = final_predictions()
    assert final_predictions() == first
    evaluate_run(random_run, epochs="all", meteor=False)
    # The epoch-2 checkpoint holds the same tensors as the final weights: the same model, the same decoding.
    assert (random_run / "predictions-test-epoch2.txt").read_text() == first


def test_item1_random_init_export_is_the_trained_model(random_run, tmp_path):
    one = export_run(random_run, tmp_path / "one", fmt="merged")
    two = export_run(random_run, tmp_path / "two", fmt="merged")
    assert (one / "model.safetensors").read_bytes() == (two / "model.safetensors").read_bytes()
    # The exported model is the one training validated: its validation loss is the recorded one.
    model = AutoModelForCausalLM.from_pretrained(str(one)).eval()
    recorded = read_results(random_run).epochs[-1].validation_loss
    assert validation_loss(model, random_run) == pytest.approx(recorded, rel=1e-5)


def test_item1_random_init_refuses_a_base_it_cannot_rebuild(random_run, tmp_path):
    """Another torch or transformers may draw other random weights from the same seed: refused in one line."""
    run = tmp_path / "copy"
    shutil.copytree(random_run, run)
    results = read_results(run)
    results.extra["random_base_sha256"] = "0" * 64  # as if the weights were drawn by another library version
    write_results(run, results)
    with pytest.raises(UserError, match="model.random_init") as refused:
        export_run(run, tmp_path / "out", fmt="merged")
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match="model.random_init"):
        evaluate_run(run, meteor=False)


# ----------------------------------------------------------------------------------------------------------- item 4


def test_item4_peft_export_loads_with_auto_peft_model(tiny, tiny_model_dir, gpt2_tokenizer_dir, tmp_path):
    from huggingface_hub import ModelCard
    from peft import AutoPeftModelForCausalLM, PeftModelForCausalLM

    base = tiny_model_dir("gpt2")  # the only place the base model can be found: the name the user gave
    run_dir, model = folder_run(tmp_path, tiny, base, gpt2_tokenizer_dir)
    results = RunResults.start("run", load_config(run_dir / CONFIG_FILE).to_dict())
    results.status = "evaluated"
    results.add_epoch(EpochRecord(epoch=1, step=4, validation_loss=2.5))
    results.add_evaluation(Evaluation(split="test", epoch=1, scores={"BLEU": 12.34}))
    write_results(run_dir, results)

    out = export_run(run_dir, tmp_path / "adapter", fmt="peft")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(base)
    assert config["task_type"] == "CAUSAL_LM"
    loaded = AutoPeftModelForCausalLM.from_pretrained(str(out)).eval()
    assert isinstance(loaded, PeftModelForCausalLM)
    ids = tiny.ids()
    torch.testing.assert_close(logits(loaded, ids), logits(model, ids), rtol=1e-5, atol=1e-5)

    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == str(base)
    assert "e2e" in card.text and "LoRA" in card.text and "12.34" in card.text


# ----------------------------------------------------------------------------------------------------------- item 5


@pytest.mark.parametrize("method", ["adapter_h", "adapter_l", "prelayer", "preembed"])
def test_item5_unmergeable_methods_export_in_the_lora_ft_format(method, tmp_path):
    config = tiny_run_config(tmp_path / "run", epochs=1, max_steps=2)
    config["method"] = {"name": method, **{"adapter_h": {"bottleneck": 4}, "adapter_l": {"bottleneck": 4}}.get(
        method, {"prefix_length": 3, "infix_length": 2})}
    run_dir = train(config_from_dict(config))
    from lora_ft.export import load_export  # the lora-ft format's loader

    out = export_run(run_dir, tmp_path / "out", fmt="lora-ft")
    first, second = load_export(out), load_export(out)
    virtual = virtual_tokens_for(first.method, first.model)
    ids = torch.tensor([[*virtual.prefix_ids, 464, 3290, 318, *virtual.infix_ids, 257]])
    # Rebuilt from the run's seed and its trained tensors: the same model every time, and the one training validated.
    torch.testing.assert_close(logits(first.model, ids), logits(second.model, ids), rtol=0, atol=0)
    recorded = read_results(run_dir).epochs[-1].validation_loss
    assert validation_loss(first.model, run_dir, virtual) == pytest.approx(recorded, rel=1e-5)


@pytest.mark.parametrize("method, fmt", [
    ("adapter_h", "peft"), ("adapter_h", "merged"), ("adapter_l", "merged"), ("prelayer", "peft"),
    ("preembed", "merged"), ("preembed", "peft"), ("bitfit", "peft"), ("ft", "peft"),
])
def test_item5_refusals_name_formats_not_functions(tiny, tiny_model_dir, gpt2_tokenizer_dir, method, fmt, tmp_path):
    kwargs = {"adapter_h": {"bottleneck": 3}, "adapter_l": {"bottleneck": 3}, "prelayer": {"prefix_length": 2, "infix_length": 0},
              "preembed": {"prefix_length": 2, "infix_length": 0}, "bitfit": {}, "ft": {}}[method]
    if method in ("prelayer", "preembed"):  # a random GPT-2 shape: the prefix starts as real GPT-2 words
        config = tiny_run_config(tmp_path / "run")
        config["method"] = {"name": method, **kwargs}
        cfg = config_from_dict(config)
        built = adapted_model(cfg)
        run_dir = tmp_path / "run"
        save_trained(built.model, built.method, run_dir)
        (run_dir / CONFIG_FILE).write_text(cfg.to_yaml())
    else:
        run_dir, _ = folder_run(tmp_path, tiny, tiny_model_dir("gpt2"), gpt2_tokenizer_dir, method, **kwargs)
    with pytest.raises(ExportError) as refused:
        export_run(run_dir, tmp_path / "out", fmt=fmt)
    message = str(refused.value)
    assert "\n" not in message
    assert "export_" not in message and "()" not in message  # no function names
    label = {"adapter_h": "Adapter^H", "adapter_l": "Adapter^L", "prelayer": "PreLayer", "preembed": "PreEmbed",
             "bitfit": "BitFit", "ft": "FT"}[method]
    assert label in message and "lora-ft" in message  # the method, and the format it can be exported in
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------- item 12


def test_item12_overwrite_replaces_an_earlier_export_of_another_format(tiny, tiny_model_dir, gpt2_tokenizer_dir, tmp_path):
    run_dir, model = folder_run(tmp_path, tiny, tiny_model_dir("gpt2"), gpt2_tokenizer_dir)
    out = tmp_path / "out"
    export_run(run_dir, out, fmt="peft")
    export_run(run_dir, out, fmt="merged", overwrite=True)
    assert not (out / "adapter_config.json").exists() and not (out / "adapter_model.safetensors").exists()
    loaded = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    ids = tiny.ids()
    torch.testing.assert_close(logits(loaded, ids), logits(model, ids), rtol=1e-5, atol=1e-5)
    # and back: the merged model's files go when a peft export replaces it
    export_run(run_dir, out, fmt="peft", overwrite=True)
    assert not (out / "model.safetensors").exists() and not (out / "config.json").exists()


def test_item12_overwrite_refuses_a_folder_with_files_lora_ft_did_not_write(tiny, tiny_model_dir, gpt2_tokenizer_dir, tmp_path):
    run_dir, _ = folder_run(tmp_path, tiny, tiny_model_dir("gpt2"), gpt2_tokenizer_dir)
    out = tmp_path / "out"
    export_run(run_dir, out, fmt="peft")
    (out / "notes.txt").write_text("keep me")
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(ExportError, match="notes.txt") as refused:
        export_run(run_dir, out, fmt="merged", overwrite=True)
    assert "\n" not in str(refused.value)
    assert sorted(p.name for p in out.iterdir()) == before and (out / "notes.txt").read_text() == "keep me"


# ---------------------------------------------------------------------------------------------------------- item 15


def test_item15_a_full_disk_during_export_leaves_nothing_behind(tiny, tiny_model_dir, gpt2_tokenizer_dir, tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerBase

    run_dir, model = folder_run(tmp_path, tiny, tiny_model_dir("gpt2"), gpt2_tokenizer_dir)

    def disk_full(self, *args, **kwargs):  # the model is written, then the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(PreTrainedTokenizerBase, "save_pretrained", disk_full)
        with pytest.raises(DiskFullError):
            export_run(run_dir, tmp_path / "out", fmt="merged")
    assert not (tmp_path / "out").exists()
    out = export_run(run_dir, tmp_path / "out", fmt="merged")  # the advised rerun
    ids = tiny.ids()
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(str(out)), ids), logits(model, ids),
                               rtol=1e-5, atol=1e-5)

    # Over an earlier export (--overwrite), a failed export keeps the earlier one as it was.
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with monkeypatch.context() as patch:
        patch.setattr(PreTrainedTokenizerBase, "save_pretrained", disk_full)
        with pytest.raises(DiskFullError):
            export_run(run_dir, out, fmt="merged", overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
