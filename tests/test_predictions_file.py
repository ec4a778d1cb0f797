"""Predictions files hold one item per line whatever the model writes; the task decides where a completion ends;
`eval --predictions` refuses a file whose line count does not match; `eval --config` scores without training."""

from __future__ import annotations

import json

import pytest

from lora_ft.cli import main
from lora_ft.config import TaskConfig, config_from_dict
from lora_ft.evaluate import one_line, stop_token_ids, write_predictions
from lora_ft.tasks import EvalItem, get_task

AWKWARD = ["Rob: hi\nEric: yo", "a\r\nb", "line\u2028sep", "", "tab\tand back\\slash", "form\x0cfeed\x85"]


def test_every_prediction_is_one_line_and_the_jsonl_is_exact(tmp_path):
    items = [EvalItem(f"c{i}", (f"ref {i}\nsecond line",)) for i in range(len(AWKWARD))]
    write_predictions(tmp_path, "predictions-test-final", AWKWARD, items)
    lines = (tmp_path / "predictions-test-final.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(AWKWARD)
    assert lines[0] == "Rob: hi\\nEric: yo" and lines[1] == "a\\nb" and lines[2] == "line\\u2028sep"
    records = [json.loads(line) for line in (tmp_path / "predictions-test-final.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in records] == AWKWARD
    assert records[0]["references"] == ["ref 0\nsecond line"]
    assert one_line("plain text") == "plain text"


def test_samsum_and_mnli_completions_end_at_a_line_break():
    samsum, mnli = get_task(TaskConfig(name="samsum")), get_task(TaskConfig(name="mnli"))
    assert samsum.end_completion(" Rob will call Eric.\nEric: ok\nRob: bye") == "Rob will call Eric."
    assert mnli.end_completion(" True\nQuestion: x") == "True"
    assert samsum.end_completion("\n") == ""
    assert samsum.end_completion("\n\n Rob will call.\nEric: ok") == "Rob will call."  # leading blank lines skipped
    e2e = get_task(TaskConfig(name="e2e"))  # the authors' rule: only EOS and a blank line end it (decode_completion)
    assert e2e.end_completion(" a\nb ") == "a\nb"


def test_single_line_tasks_decode_past_leading_line_breaks(gpt2_tokenizer_dir):
    """A line break must not stop a one-line completion: a blank line first (SmolLM2 early in SAMSum training) would
    score an empty summary; `end_completion` takes the first line with text instead."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gpt2_tokenizer_dir))
    tokenizer.eos_token = "<|endoftext|>"
    cfg = config_from_dict({"model": {"name_or_path": "gpt2"}, "task": {"name": "samsum"}, "method": {"name": "ft"}})
    assert stop_token_ids(tokenizer, cfg, get_task(cfg.task)) == (50256,)  # EOS only (GPT-2 id)
    assert stop_token_ids(tokenizer, cfg, get_task(TaskConfig(name="mnli"))) == (50256,)
    assert stop_token_ids(tokenizer, cfg, get_task(TaskConfig(name="e2e"))) == (50256, 628)  # the authors': EOS, "\n\n"


@pytest.mark.parametrize("task, refs", [("samsum", "a\nb\nc\n"), ("mnli", "True\nFalse\nNeither\n"), ("e2e", "a\nb\n\nc\n\nd\n")])
def test_eval_predictions_refuses_a_line_count_mismatch(tmp_path, capsys, task, refs):
    predictions, references = tmp_path / "p.txt", tmp_path / "r.txt"
    predictions.write_text("Rob: hi\nEric: yo\nmore\nand more\n")  # 4 lines for 3 items: a broken file
    references.write_text(refs)
    assert main(["eval", "--task", task, "--predictions", str(predictions), "--references", str(references),
                 "--no-meteor"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "p.txt has 4 lines but" in err and "has 3 " in err


def test_eval_config_scores_an_untrained_model_in_a_new_run_dir(tmp_path, shared_data_dir, gpt2_tokenizer_dir, capsys):
    """A tiny random GPT-2 on real SAMSum rows: run directory, results.json (epoch 0), one line per item; a second
    call into the same directory is refused unless --overwrite."""
    import yaml

    config = {
        "model": {"name_or_path": "gpt2", "tokenizer": str(gpt2_tokenizer_dir), "random_init": True,
                  "config_overrides": {"n_layer": 1, "n_embd": 16, "n_head": 2}},
        "task": {"name": "samsum", "test_file": str(shared_data_dir / "samsum" / "test.csv"), "max_eval_examples": 3},
        "method": {"name": "prelayer", "prefix_length": 2, "infix_length": 1},
        "decoding": {"num_beams": 1, "max_new_tokens": 12, "batch_size": 3, "no_repeat_ngram_size": 0},
        "output": {"dir": str(tmp_path / "run")},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["eval", "--config", str(path)]) == 0
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    (evaluation,) = results["evaluations"]
    assert evaluation["epoch"] == 0 and evaluation["num_items"] == 3 and set(evaluation["scores"]) >= {"ROUGE-L"}
    assert len((run / "predictions-test-untrained.txt").read_text().splitlines()) == 3
    assert len((run / "references-test.txt").read_text().splitlines()) == 3
    capsys.readouterr()
    assert main(["eval", "--config", str(path), "--base"]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main(["eval", "--config", str(path), "--base", "--overwrite"]) == 0
    assert (run / "predictions-test-base.txt").is_file()


def test_a_one_line_completion_after_a_blank_line_keeps_its_text(gpt2_tokenizer_dir):
    """SmolLM2 PreLayer after 12 SAMSum steps decoded "\\n\\nThe original text is ...": cut at the blank line (E2E's rule)
    every summary was empty and scored ROUGE 0."""
    from transformers import AutoTokenizer

    from lora_ft.generate import decode_completion

    tokenizer = AutoTokenizer.from_pretrained(str(gpt2_tokenizer_dir))
    ids = tokenizer.encode("\n\nThe original text.\nRob: ok<|endoftext|> more", add_special_tokens=False)
    samsum, e2e = get_task(TaskConfig(name="samsum")), get_task(TaskConfig(name="e2e"))
    text = decode_completion(tokenizer, ids, blank_line_ends=not samsum.single_line)
    assert samsum.end_completion(text) == "The original text."
    assert e2e.end_completion(decode_completion(tokenizer, ids, blank_line_ends=not e2e.single_line)) == ""  # the authors'
