"""`method.name: peft` through the whole harness on a tiny GPT-2 with real E2E rows: `lora-ft train` trains it with the
task's recipe, `--resume` after an interruption ends with the uninterrupted run's weights, `export` writes peft's own
adapter (and a merged model where peft can merge the type), and the exports score as the run did (`eval --adapter`,
`eval --base` on the merged folder) with the paper's beam search and the official scorer's metrics. The first two cases
(LoRA with DoRA, prompt tuning) run by default; the others are marked slow."""

from __future__ import annotations

import json

import pytest
import torch

from lora_ft.build import count_for_config
from lora_ft.checkpoint import read_trained
from lora_ft.config import config_from_dict
from lora_ft.evaluate import evaluate_config, evaluate_run
from lora_ft.export import export_run
from lora_ft.report.table import build_table
from lora_ft.results import read_results
from lora_ft.train import Trainer, train
from tiny_runs import tiny_llama_run_config, tiny_run_config

pytestmark = pytest.mark.usefixtures("one_thread")

GPT2_ATTENTION = ["c_attn"]
CASES = [
    pytest.param({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "use_dora": True, "target_modules": GPT2_ATTENTION},
                 "LoRA+DoRA r=2 c_attn", id="lora-dora"),
    pytest.param({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 3}, "Prompt tuning num_virtual_tokens=3",
                 id="prompt-tuning"),
    pytest.param({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "use_rslora": True, "target_modules": GPT2_ATTENTION},
                 "LoRA+rsLoRA r=2 c_attn", id="lora-rslora", marks=pytest.mark.slow),
    pytest.param({"peft_type": "VERA", "r": 4, "target_modules": GPT2_ATTENTION}, "VeRA r=4 c_attn", id="vera",
                 marks=pytest.mark.slow),
    pytest.param({"peft_type": "IA3", "target_modules": ["c_attn", "mlp.c_proj"], "feedforward_modules": ["mlp.c_proj"]},
                 "(IA)^3 feedforward_modules=mlp.c_proj c_attn,c_proj", id="ia3", marks=pytest.mark.slow),
    # peft's LoHa and LoKr take Linear layers, not GPT-2's Conv1D (a one-line error there): a tiny LLaMA
    pytest.param({"peft_type": "LOHA", "r": 2, "target_modules": ["q_proj", "v_proj"]}, "LoHa r=2 q_proj,v_proj",
                 id="loha-llama", marks=pytest.mark.slow),
    pytest.param({"peft_type": "LOKR", "r": 2, "target_modules": ["q_proj", "v_proj"]}, "LoKr r=2 q_proj,v_proj",
                 id="lokr-llama", marks=pytest.mark.slow),
]


def peft_config(run_dir, peft: dict, **training) -> dict:
    make = tiny_llama_run_config if "q_proj" in str(peft.get("target_modules")) else tiny_run_config
    config = make(run_dir, checkpoint_every_steps=3, **training)
    config["method"] = {"name": "peft", "peft": peft}
    config["task"]["max_eval_examples"] = 3
    return config


def predictions(run_dir, evaluation) -> list[str]:
    return [json.loads(line)["prediction"] for line in
            (run_dir / evaluation.predictions_file.replace(".txt", ".jsonl")).read_text().splitlines()]


@pytest.mark.parametrize("peft, label", CASES)
def test_a_peft_run_trains_resumes_exports_and_scores(tmp_path, monkeypatch, peft, label):
    whole = train(config_from_dict(peft_config(tmp_path / "whole", peft)))
    results = read_results(whole)
    assert results.status == "trained" and [e.step for e in results.epochs] == [4, 8]
    assert results.epochs[-1].train_loss < 11.5 and results.extra["batches"].startswith("packed")
    counted = count_for_config(config_from_dict(peft_config(tmp_path / "x", peft)))  # `lora-ft params`, no weights
    assert results.parameters.trainable == counted["trainable"] == counted["trainable_by_peft"] > 0
    assert results.extra["peft"]["trainable_by_peft"] == results.parameters.trainable
    assert results.extra["peft"]["config"]["peft_type"] == peft["peft_type"]

    # interrupted after step 5 (checkpoint at step 3), then resumed: the uninterrupted run's weights
    cfg = config_from_dict(peft_config(tmp_path / "resumed", peft))
    original, calls = Trainer._training_step, {"n": 0}

    def failing(self, batch):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "_training_step", failing)
    with pytest.raises(Exception):
        train(cfg)
    monkeypatch.setattr(Trainer, "_training_step", original)
    train(cfg, resume=True)
    expected, got = read_trained(whole)[0], read_trained(tmp_path / "resumed")[0]
    assert set(got) == set(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)

    # decoded with the paper's beam search, scored with the official scorer's metrics (METEOR needs Java: off)
    (scored,) = evaluate_run(whole, meteor=False)
    assert set(scored.scores) == {"BLEU", "NIST", "ROUGE_L", "CIDEr"}
    expected_outputs = predictions(whole, scored)
    assert any(expected_outputs)

    export_run(whole, tmp_path / "adapter", fmt="peft")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["peft_type"] == peft["peft_type"]
    adapter_run = {**peft_config(tmp_path / "eval-adapter", peft)}
    run_dir, (from_adapter,) = evaluate_config(config_from_dict(adapter_run), adapter=tmp_path / "adapter", meteor=False)
    assert from_adapter.scores == scored.scores and predictions(run_dir, from_adapter) == expected_outputs

    formats = ["merged"] if peft["peft_type"] != "PROMPT_TUNING" else []
    for fmt in formats:
        export_run(whole, tmp_path / fmt, fmt=fmt)
        merged = peft_config(tmp_path / f"eval-{fmt}", peft)
        merged["model"] = {**merged["model"], "name_or_path": str(tmp_path / fmt), "random_init": False,
                           "config_overrides": {}}
        run_dir, (from_folder,) = evaluate_config(config_from_dict(merged), base=True, meteor=False)
        assert predictions(run_dir, from_folder) == expected_outputs
    if not formats:
        with pytest.raises(Exception, match="cannot be exported as 'merged'"):
            export_run(whole, tmp_path / "merged", fmt="merged")

    (row,) = json.loads(build_table([whole], fmt="json"))["rows"]
    assert row["label"].endswith(f" (peft {label})")  # peft's type, its variant and its size-defining settings
