"""`lora-ft eval --config FILE --adapter DIR` (a peft adapter folder) and `model.name_or_path=DIR --base` (a merged
model folder): scored without training, into a run directory of their own with their provenance; their scores and
outputs are those of the run they came from, and a table sets them beside it (lora_ft/scored_model.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lora_ft.cli import main
from lora_ft.config import config_from_dict
from lora_ft.evaluate import evaluate_config, evaluate_run
from lora_ft.export import export_run
from lora_ft.report.table import build_table
from lora_ft.results import read_results
from lora_ft.scored_model import AdapterError, weights_sha256
from lora_ft.train import train
from tiny_runs import tiny_run_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_and_exports(tmp_path_factory):
    """A tiny LoRA run (the paper's method on GPT-2's fused c_attn), its scores, and its peft and merged exports."""
    root = tmp_path_factory.mktemp("adapter")
    config = tiny_run_config(root / "run", epochs=1)
    config["task"]["max_eval_examples"] = 3
    run = train(config_from_dict(config))
    (evaluation,) = evaluate_run(run, meteor=False)
    export_run(run, root / "peft", fmt="peft")
    export_run(run, root / "merged", fmt="merged")
    return root, config, evaluation


def predictions(run_dir: Path, evaluation) -> list[str]:
    return [json.loads(line)["prediction"] for line in
            (run_dir / evaluation.predictions_file.replace(".txt", ".jsonl")).read_text().splitlines()]


def test_an_exported_adapter_and_merged_folder_score_as_their_run(run_and_exports):
    root, config, trained = run_and_exports
    expected = predictions(root / "run", trained)
    assert any(expected), "the tiny run decodes to nothing: the comparison would be empty"

    adapter_cfg = config_from_dict({**config, "output": {"dir": str(root / "eval-adapter")}})
    run_dir, (scored,) = evaluate_config(adapter_cfg, adapter=root / "peft", meteor=False)
    assert scored.scores == trained.scores and predictions(run_dir, scored) == expected
    results = read_results(run_dir)
    record = results.extra["scored_model"]
    assert record["kind"] == "peft adapter" and record["path"] == str((root / "peft").resolve())
    assert record["peft_config"]["peft_type"] == "LORA" and record["weights_sha256"] == weights_sha256(root / "peft")
    assert results.config["method"]["name"] == "peft"  # the run directory's config names what was scored
    # as peft counts the adapter: q and v of a block become one rank-4 update of c_attn (A 4x32, B 96x4; B's zeros
    # for k included), twice the paper's 2 x 2 x (2 x 32 x 2) = 512 (tests/test_peft_equivalence.py)
    assert results.parameters.trainable == 2 * (4 * 32 + 96 * 4)

    merged = {**config, "model": {**config["model"], "name_or_path": str(root / "merged"), "random_init": False,
                                  "config_overrides": {}}, "output": {"dir": str(root / "eval-merged")}}
    run_dir, (scored,) = evaluate_config(config_from_dict(merged), base=True, meteor=False)
    assert scored.scores == trained.scores and predictions(run_dir, scored) == expected
    record = read_results(run_dir).extra["scored_model"]
    assert record["kind"] == "model folder" and record["export"]["format"] == "merged"

    table = build_table([root / "run", root / "eval-adapter", root / "eval-merged"])
    assert "(LoRA r=2 q,v)" in table and "(peft LoRA r=4 " in table and "(merged export)" in table


def test_an_adapter_on_another_base_is_refused_in_one_line(run_and_exports, tmp_path, capsys):
    root, config, _ = run_and_exports
    other = tmp_path / "other"
    shutil.copytree(root / "peft", other)
    settings = json.loads((other / "adapter_config.json").read_text())
    (other / "adapter_config.json").write_text(json.dumps({**settings, "base_model_name_or_path": "gpt2-large"}))
    cfg = config_from_dict({**config, "output": {"dir": str(tmp_path / "eval")}})
    with pytest.raises(AdapterError, match="trained on 'gpt2-large', but the config's model is random weights"):
        evaluate_config(cfg, adapter=other)
    # a random base drawn from another seed than the adapter's run is another base
    reseeded = config_from_dict({**config, "training": {**config["training"], "seed": 4},
                                 "output": {"dir": str(tmp_path / "eval")}})
    with pytest.raises(AdapterError, match="trained on other random weights than model.random_init draws"):
        evaluate_config(reseeded, adapter=root / "peft")
    # by name, on a pretrained config: gpt2 (the config) is not gpt2-large (the adapter's)
    config_file = tmp_path / "pretrained.yaml"
    pretrained = {**config, "model": {"name_or_path": "gpt2", "tokenizer": config["model"]["tokenizer"]},
                  "output": {"dir": str(tmp_path / "eval2")}}
    config_file.write_text(json.dumps(pretrained))
    assert main(["eval", "--config", str(config_file), "--adapter", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was trained on 'gpt2-large', but the config's model is 'gpt2'" in err
    assert not (tmp_path / "eval2").exists()  # refused before anything was written or loaded


def test_a_folder_that_is_not_an_adapter_is_named(run_and_exports, tmp_path):
    root, config, _ = run_and_exports
    cfg = config_from_dict({**config, "output": {"dir": str(tmp_path / "eval")}})
    with pytest.raises(AdapterError, match="has no adapter_config.json: is it a peft adapter folder"):
        evaluate_config(cfg, adapter=root / "merged")
