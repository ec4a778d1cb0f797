"""Issue 17's probe cases on bad input and messages (items 3, 13, 14, 15 and 16): what a careful user still hit.

Each test is one case a reviewer saw fail on main, named after its item; they are kept so that the next probe starts
from them. User errors must be ONE line on stderr and exit 2 (as tests/test_user_errors.py), found before any
expensive work; everything runs in-process on tiny inputs.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import logging
import os
from pathlib import Path

import pytest
import yaml
from tiny_runs import SHARED, tiny_run_config

from lora_ft.cli import main

BOM = "\ufeff"


def run_cli(capsys, *argv) -> tuple[int, list[str]]:
    """(exit code, non-empty stderr lines) of `lora-ft *argv`; argparse's exits count like returns."""
    code, _, lines = run_cli_out(capsys, *argv)
    return code, lines


def run_cli_out(capsys, *argv) -> tuple[int, str, list[str]]:
    """(exit code, stdout, non-empty stderr lines) of `lora-ft *argv`."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def assert_user_error(capsys, argv, *expected: str) -> str:
    """Exit 2 and one `lora-ft: ...` line (warnings aside) holding every `expected` text; returns the line."""
    code, lines = run_cli(capsys, *argv)
    lines = [line for line in lines if not line.startswith("lora-ft: warning: ")]
    assert (code, len(lines)) == (2, 1), f"exit {code}, stderr: {lines}"
    assert lines[0].startswith("lora-ft: "), lines[0]
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture
def tiny_yaml(tmp_path) -> Path:
    """tests/tiny_runs' config (random 2-block GPT-2, real E2E rows) as a file; its run directory is tmp/run."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_run_config(tmp_path / "run")))
    return path


def write_run(run_dir: Path, *, status: str = "trained", evaluations=()) -> Path:
    """A run directory as `lora-ft train` leaves it, minus the weights: config.yaml and results.json."""
    from lora_ft.results import Evaluation, RunResults, write_results

    run_dir.mkdir(parents=True, exist_ok=True)
    config = tiny_run_config(run_dir)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    results = RunResults.start(run_dir.name, config)
    results.status = status
    for split, epoch, scores in evaluations:
        results.add_evaluation(Evaluation(split=split, epoch=epoch, scores=scores, num_items=2))
    write_results(run_dir, results)
    return run_dir


E2E_SCORES = {"BLEU": 60.0, "NIST": 7.0, "METEOR": 40.0, "ROUGE_L": 65.0, "CIDEr": 1.8}


# ---------------------------------------------------------------------------------------------------------- item 3


@pytest.mark.parametrize(
    "text, expected",
    [("8:16", "8:16"), ("1e-3", 0.001), ("no", "no"), ("on", "on"), ("0x10", 16), ("010", 10)],
    ids=["8:16", "1e-3", "no", "on", "0x10", "010"],
)
def test_item3_override_values_read_as_typed(text, expected):
    """YAML 1.2's core schema: no base-60 integers, no yes/no/on/off booleans, 010 is ten, 1e-3 a number."""
    from lora_ft.config import parse_override

    _, value = parse_override(f"task.some_key={text}")
    assert value == expected and type(value) is type(expected)


def test_item3_eval_slice_override_is_the_slice_typed(capsys, tiny_yaml):
    code, lines = run_cli(capsys, "config", "validate", tiny_yaml, "task.eval_slice=8:16")
    assert (code, lines) == (0, [])
    from lora_ft.config import load_config

    assert load_config(tiny_yaml, ["task.eval_slice=8:16"]).task.eval_slice == "8:16"


def test_item3_string_fields_keep_the_text_typed(tiny_yaml):
    """A string field gets the characters typed, even when YAML would read them as a number or a boolean."""
    from lora_ft.config import load_config

    cfg = load_config(tiny_yaml, ["output.dir=2024", "task.hub_revision=1.0", "model.tokenizer=0x10"])
    assert (cfg.output.dir, cfg.task.hub_revision, cfg.model.tokenizer) == ("2024", "1.0", "0x10")
    assert load_config(tiny_yaml, ["model.tokenizer=null"]).model.tokenizer is None


def test_item3_bool_field_says_what_is_accepted(capsys, tiny_yaml):
    assert_user_error(capsys, ["config", "validate", tiny_yaml, "output.overwrite=yes"],
                      "output.overwrite", "true or false", "'yes'", "output.overwrite=true")


def test_item3_config_files_read_as_typed(tmp_path):
    from lora_ft.config import load_config

    data = tiny_run_config(tmp_path / "run")
    for key in ("train_slice", "validation_slice"):  # written below as a user would type them
        data["task"].pop(key, None)
    text = yaml.safe_dump(data) + "\n"
    text = text.replace("task:\n", "task:\n  eval_slice: 8:16\n  train_slice: 0:8\n", 1)
    text = text.replace("training:\n", "training:\n  mixed_precision: no\n", 1).replace("learning_rate: 0.005", "learning_rate: 1e-3")
    path = tmp_path / "c.yaml"
    path.write_text(text)
    cfg = load_config(path)
    assert (cfg.task.eval_slice, cfg.task.train_slice) == ("8:16", "0:8")
    assert (cfg.training.mixed_precision, cfg.training.learning_rate) == ("no", 0.001)


def test_item3_sweep_files_read_as_typed_and_round_trip(tmp_path):
    """A sweep file goes through the same reader, and each run's override reads back as the swept value."""
    from lora_ft.config import parse_override
    from lora_ft.report.sweep import load_sweep

    path = tmp_path / "s.yaml"
    config = tiny_run_config(tmp_path / "runs")
    config["task"]["eval_slice"] = "0:8"
    path.write_text(yaml.safe_dump(config) + "sweep:\n  task.eval_slice: [0:8, 8:16]\n  training.learning_rate: [1e-3, 2e-4]\n")
    _, runs = load_sweep(path)
    assert [run.values for run in runs] == [
        {"task.eval_slice": a, "training.learning_rate": b} for a in ("0:8", "8:16") for b in (0.001, 0.0002)
    ]
    for run in runs:
        assert {".".join(k): v for k, v in map(parse_override, run.overrides)} == run.values


# --------------------------------------------------------------------------------------------------------- item 13


def test_item13_bom_is_not_part_of_the_first_e2e_mr(tmp_path):
    """A test file saved with a BOM: its first MR is the second's, so 4 references make 2 items, not 3."""
    from lora_ft.config import TaskConfig
    from lora_ft.tasks import get_task

    rows = ["name : A | food : Thai||A serves Thai .", "name : A | food : Thai||Thai food at A .",
            "name : B | area : riverside||B is by the river .", "name : B | area : riverside||B , riverside ."]
    path = tmp_path / "test.txt"
    path.write_text(BOM + "\n".join(rows) + "\n", encoding="utf-8")
    task = get_task(TaskConfig(name="e2e", test_file=str(path)))
    items = task.eval_items(task.load("test"))
    assert [i.context for i in items] == ["name : A | food : Thai", "name : B | area : riverside"]


def _bom_files(tmp_path: Path) -> dict[str, tuple[str, Path]]:
    """(task, file) per released form, each saved with a BOM."""
    files = {
        "mnli-tsv": ("mnli", "dev.tsv", "sentence1\tsentence2\tgold_label\nA cat sat.\tA cat.\tentailment\n"),
        "mnli-jsonl": ("mnli", "dev.jsonl", '{"premise": "A cat sat.", "hypothesis": "A cat.", "label": 0}\n'),
        "samsum-csv": ("samsum", "test.csv", 'id,dialogue,summary\n1,"A: hi",A greets.\n'),
        "samsum-json": ("samsum", "test.json", '[{"id": "1", "dialogue": "A: hi", "summary": "A greets."}]\n'),
        "wikisql-jsonl": ("wikisql", "test.jsonl", json.dumps(
            {"question": "Who?", "table": {"header": ["Name"]}, "sql": {"human_readable": "SELECT Name FROM table"}}) + "\n"),
    }
    out = {}
    for key, (task, name, text) in files.items():
        path = tmp_path / key / name
        path.parent.mkdir()
        path.write_text(BOM + text, encoding="utf-8")
        out[key] = (task, path)
    return out


@pytest.mark.parametrize("form", ["mnli-tsv", "mnli-jsonl", "samsum-csv", "samsum-json", "wikisql-jsonl"])
def test_item13_bom_is_removed_in_every_task_file(tmp_path, form):
    from lora_ft.config import TaskConfig
    from lora_ft.tasks import get_task

    task_name, path = _bom_files(tmp_path)[form]
    split = "validation" if task_name == "mnli" else "test"
    task = get_task(TaskConfig(name=task_name, **{f"{split}_file": str(path)}))
    examples = task.load(split)
    assert len(examples) == 1 and BOM not in examples[0].context
    assert examples[0].context.startswith(("A cat sat.", "A: hi", "Table: Name"))


@pytest.mark.parametrize("task", ["mnli", "samsum"])
def test_item13_bom_is_removed_in_scored_files(tmp_path, task):
    """`eval --task` on prediction and reference files saved with a BOM scores as without it."""
    from lora_ft.scoring import score_files

    lines = ["True", "False"] if task == "mnli" else ["Amanda baked cookies .", "Jerry will come ."]
    plain, marked = tmp_path / "plain.txt", tmp_path / "bom.txt"
    plain.write_text("\n".join(lines) + "\n", encoding="utf-8")
    marked.write_text(BOM + "\n".join(lines) + "\n", encoding="utf-8")
    assert score_files(task, marked, marked) == score_files(task, plain, plain)
    assert score_files(task, plain, marked) == score_files(task, plain, plain)


# --------------------------------------------------------------------------------------------------------- item 14


def test_item14a_max_length_above_the_model_positions_is_refused_by_config_validate(capsys, tiny_yaml):
    assert_user_error(capsys, ["config", "validate", tiny_yaml, "task.max_length=2048"],
                      "task.max_length 2048", "1024 positions", "task.max_length=1024")


def test_item14a_train_refuses_it_before_weights_load(capsys, tiny_yaml, tmp_path, monkeypatch):
    """Through the CLI, and through train() itself (which also gets models that `config validate` cannot read)."""
    import lora_ft.build

    def no_weights(*args, **kwargs):
        raise AssertionError("model weights were loaded")

    monkeypatch.setattr(lora_ft.build, "load_model", no_weights)
    assert_user_error(capsys, ["train", "--config", tiny_yaml, "task.max_length=2048"], "task.max_length", "1024")
    from lora_ft.config import config_from_dict
    from lora_ft.schema import ConfigError
    from lora_ft.train import train

    data = tiny_run_config(tmp_path / "run2")
    data["task"]["max_length"] = 1025
    with pytest.raises(ConfigError, match="task.max_length 1025 .* 1024 positions"):
        train(config_from_dict(data))


TINY_POSITIONS = ["model.config_overrides={n_layer: 2, n_embd: 32, n_head: 2, n_positions: 12}", "task.max_length=12"]


def test_item14b_eval_cuts_a_prompt_longer_than_the_positions_from_the_left(capsys, tiny_yaml, tmp_path):
    """E2E MRs are ~16 tokens; a 12-position model decoding 6 new tokens has room for 6 prompt tokens."""
    out = tmp_path / "eval"
    code, lines = run_cli(capsys, "eval", "--config", tiny_yaml, f"output.dir={out}", *TINY_POSITIONS,
                          "--base", "--no-meteor")
    assert code == 0, lines
    assert len(lines) == 1 and lines[0].startswith("lora-ft: warning: "), lines
    assert "2 of 2 prompts" in lines[0] and "12 positions" in lines[0] and "cut from the start" in lines[0]
    assert len((out / "predictions-test-base.txt").read_text().splitlines()) == 2


def test_item14b_a_cut_prompt_keeps_the_end_of_the_context(gpt2_tokenizer):
    """The context loses its first tokens; a prefix method's virtual tokens and the infix stay."""
    from lora_ft.data import VirtualTokens, encode_prompt

    context = "name : Blue Spice | Type : coffee shop | area : city centre"
    virtual = VirtualTokens((9000, 9001), (9002,))
    whole = encode_prompt(gpt2_tokenizer, context, separator_eos=False, virtual=virtual)
    cut = encode_prompt(gpt2_tokenizer, context, separator_eos=False, virtual=virtual, max_tokens=8)
    assert len(cut) == 8 and cut[:2] == [9000, 9001] and cut[2:] == whole[-6:]
    assert encode_prompt(gpt2_tokenizer, context, separator_eos=False, virtual=virtual, max_tokens=len(whole)) == whole


@pytest.fixture
def read_only(monkeypatch):
    """read_only(folder): every write under `folder` fails with EROFS, as on a read-only mount; reads still work.
    (The tests run as root, where chmod stops no write.)"""
    folders: list[str] = []

    def inside(path) -> bool:
        if isinstance(path, int):
            return False
        text = os.path.abspath(os.fsdecode(os.fspath(path)))
        return any(text == f or text.startswith(f + os.sep) for f in folders)

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(os.fspath(path)))

    real = {name: getattr(os, name) for name in ("mkdir", "open", "replace", "rename", "unlink", "remove", "rmdir")}
    real_open = builtins.open

    def fake_os_open(path, flags, *args, **kwargs):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real["open"](path, flags, *args, **kwargs)

    def fake_open(file, mode="r", *args, **kwargs):
        if not isinstance(file, int) and inside(file) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def one_path(name):
        def fake(path, *args, **kwargs):
            if inside(path):
                refuse(path)
            return real[name](path, *args, **kwargs)
        return fake

    def two_paths(name):
        def fake(src, dst, *args, **kwargs):
            if inside(src) or inside(dst):
                refuse(dst)
            return real[name](src, dst, *args, **kwargs)
        return fake

    monkeypatch.setattr(os, "open", fake_os_open)
    for name in ("mkdir", "unlink", "remove", "rmdir"):
        monkeypatch.setattr(os, name, one_path(name))
    for name in ("replace", "rename"):
        monkeypatch.setattr(os, name, two_paths(name))
    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)

    def make(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        folders.append(os.path.abspath(folder))
        return folder

    return make


def test_item14c_read_only_output_dir_in_train(capsys, tiny_yaml, tmp_path, read_only):
    folder = read_only(tmp_path / "ro")
    assert_user_error(capsys, ["train", "--config", tiny_yaml, f"output.dir={folder / 'run'}"],
                      f"output.dir {folder / 'run'}", "not writable", "read-only file system")


def test_item14c_read_only_run_dir_in_eval(capsys, tiny_yaml, tmp_path, read_only):
    run = write_run(tmp_path / "ro" / "run")
    read_only(tmp_path / "ro")
    assert_user_error(capsys, ["eval", "--run", run, "--base", "--no-meteor"], f"{run}", "not writable")
    assert_user_error(capsys, ["eval", "--config", tiny_yaml, f"output.dir={tmp_path / 'ro' / 'new'}", "--base"],
                      "output.dir", "not writable")


def test_item14c_read_only_out_in_export(capsys, tmp_path, read_only):
    run = write_run(tmp_path / "run")
    folder = read_only(tmp_path / "ro")
    assert_user_error(capsys, ["export", "--run", run, "--out", folder / "adapter"], "--out", "not writable")


def test_item14c_read_only_out_in_table(capsys, tmp_path, read_only):
    run = write_run(tmp_path / "run", status="evaluated", evaluations=[("test", 1, E2E_SCORES)])
    folder = read_only(tmp_path / "ro")
    assert_user_error(capsys, ["table", "--runs", run, "--out", folder / "table.md"], "--out", "not writable")


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_item14d_seed_outside_the_generators_range_is_refused_by_config_validate(capsys, tiny_yaml, seed):
    assert_user_error(capsys, ["config", "validate", tiny_yaml, f"training.seed={seed}"],
                      "training.seed", "4294967295", seed)


def test_item14e_table_skips_a_results_json_with_a_huge_integer(capsys, tmp_path):
    write_run(tmp_path / "runs" / "good", status="evaluated", evaluations=[("test", 1, E2E_SCORES)])
    bad = write_run(tmp_path / "runs" / "bad", status="evaluated", evaluations=[("test", 1, E2E_SCORES)])
    text = (bad / "results.json").read_text()
    (bad / "results.json").write_text(text.replace('"wall_time_s": null', '"wall_time_s": ' + "9" * 5000))
    code, out, lines = run_cli_out(capsys, "table", "--runs", tmp_path / "runs")
    assert code == 0, lines
    assert "| 60.0 |" in out, out  # the good run's BLEU
    note = out[out.index("Left out:"):]
    assert "runs/bad/results.json" in note and "damaged" in note, note  # (markdown escapes the underscores of tmp_path)


# --------------------------------------------------------------------------------------------------------- item 15


def test_item15a_sweep_config_with_a_yaml_tag_is_one_line(capsys, tmp_path):
    config = tiny_run_config(tmp_path / "runs")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(config) + "sweep:\n  method.rank: [1, 2]\nextra: !!python/object:os.system {}\n")
    assert_user_error(capsys, ["sweep", "--config", path, "--dry-run"], "s.yaml", "python/object", "line ")


@pytest.mark.parametrize("command", [["config", "validate"], ["sweep", "--dry-run", "--config"]])
def test_item15a_override_with_a_yaml_tag_is_one_line(capsys, tmp_path, command):
    config = tiny_run_config(tmp_path / "runs")
    config["sweep"] = {"method.rank": [1, 2]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(config))
    assert_user_error(capsys, [*command, path, "training.seed=!!python/object:os.system {}"],
                      "training.seed=", "python/object")


def test_item15b_a_jsonl_line_that_is_not_json_names_the_file_and_line(tmp_path):
    from lora_ft.config import TaskConfig
    from lora_ft.tasks import TaskDataError, get_task

    good = json.dumps({"premise": "A cat sat.", "hypothesis": "A cat.", "label": 0})
    path = tmp_path / "dev.jsonl"
    path.write_text(f"{good}\n{good}\n{{'premise': 'single quotes'}}\n{good}\n")
    task = get_task(TaskConfig(name="mnli", validation_file=str(path)))
    with pytest.raises(TaskDataError) as info:
        task.load("validation")
    message = str(info.value)
    assert "\n" not in message and f"{path} line 3" in message and "not valid JSON" in message


def test_item15c_eval_disk_full_advice_does_not_mention_resume(capsys, tmp_path, monkeypatch):
    run = write_run(tmp_path / "run")
    real_fdopen = os.fdopen

    def full(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        if not os.readlink(f"/proc/self/fd/{fd}").startswith(str(run)):
            return handle

        class Full:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                handle.close()

            def write(self, data):
                raise OSError(errno.ENOSPC, "No space left on device")

        return Full()

    monkeypatch.setattr(os, "fdopen", full)
    line = assert_user_error(capsys, ["eval", "--run", run, "--base", "--no-meteor"], "no space left on device",
                             "Free some space")
    assert "--resume" not in line


def test_item15d_refusals_say_what_a_foreign_folder_holds(capsys, tiny_yaml, tmp_path):
    """Files lora-ft did not write are no run: the refusal names them instead of "already holds a run" / "it may hold
    a run". (A foreign results.json or config.yaml is refused as such since issue 17 item 11; other files are named.)"""
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "results.json").write_text('{"accuracy": 0.9}\n')
    line = assert_user_error(capsys, ["train", "--config", tiny_yaml, f"output.dir={foreign}"], "results.json",
                             "not written by lora-ft")
    assert "already holds a run" not in line and "--resume" not in line
    other = tmp_path / "theirs-too"
    other.mkdir()
    (other / "notes.txt").write_text("mine\n")
    line = assert_user_error(capsys, ["eval", "--config", tiny_yaml, f"output.dir={other}", "--base"], "notes.txt",
                             "no lora-ft run", "--overwrite")
    assert "may hold a run" not in line


# --------------------------------------------------------------------------------------------------------- item 16


def test_item16_lora_rank_above_the_layer_width_warns_once(tiny, caplog):
    caplog.set_level(logging.WARNING, logger="lora_ft")
    tiny.adapt("gpt2", "lora", rank=1000, alpha=8.0, dropout=0.0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "method.rank 1000" in warnings[0] and "32 x 32" in warnings[0] and "min(d, k) = 32" in warnings[0]
    caplog.clear()
    tiny.adapt("gpt2", "lora", rank=32, alpha=8.0, dropout=0.0)  # r = min(d, k): no warning
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
