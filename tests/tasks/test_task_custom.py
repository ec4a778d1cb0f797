"""`task.name: custom`: one's own JSONL/CSV rows through a prompt template and a target column, with the paper's
conventions, the built-in tasks' splits and slices, and a metric chosen from lora-ft's scorers; trained, evaluated and
tabled end to end on a tiny GPT-2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lora_ft.config import TaskConfig, config_from_dict
from lora_ft.data import encode_example
from lora_ft.metrics.generic import bleu, exact_match, label_accuracy
from lora_ft.tasks import TaskDataError, get_task

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def write_rows(path: Path, n: int = 40) -> Path:
    """n rows of small sums ("What is 3 plus 4?" -> "seven"), with one empty answer (row 5) that is skipped."""
    rows = [{"question": f"What is {i % 5} plus {i % 4}?", "hint": "sum", "answer": "" if i == 5 else WORDS[i % 5 + i % 4]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def custom(path: Path, **settings) -> TaskConfig:
    values = {"prompt": "Q: {question} ({hint})\nA:", "target": "answer", "metric": "exact_match",
              "train_slice": "0:30", "validation_slice": "30:35", "test_slice": "35:40", **settings}
    return TaskConfig(name="custom", train_file=str(path), validation_file=str(path), test_file=str(path), **values)


def test_rows_become_prompt_and_completion_with_the_papers_conventions(tmp_path, gpt2_tokenizer_dir):
    from lora_ft.config import ModelConfig
    from lora_ft.models.loading import load_tokenizer

    gpt2_tokenizer = load_tokenizer(ModelConfig(name_or_path="gpt2", tokenizer=str(gpt2_tokenizer_dir)))
    task = get_task(custom(write_rows(tmp_path / "sums.jsonl")))
    task.check_source(("train", "validation", "test"))
    task.check_split_roles("test")
    train = task.load("train")
    assert len(train) == 29  # rows 0..29, the empty answer skipped
    assert train[0].context == "Q: What is 0 plus 0? (sum)\nA:" and train[0].target == " zero"
    encoded = encode_example(gpt2_tokenizer, train[1], separator_eos=False, max_length=64)
    completion = [i for i, label in zip(encoded["input_ids"], encoded["labels"]) if label != -100]
    assert gpt2_tokenizer.decode(completion) == " two<|endoftext|>"  # the loss: the completion and its EOS only
    assert [e.context for e in task.load("test")][0] == "Q: What is 0 plus 3? (sum)\nA:"  # row 35
    assert task.single_line and task.metric_names == ("exact_match",) and task.primary_metric == "exact_match"


def test_a_csv_file_and_line_breaks(tmp_path):
    path = tmp_path / "notes.csv"
    path.write_text('text,summary\n"a long\nnote","first line\nsecond line"\n', encoding="utf-8")
    config = TaskConfig(name="custom", train_file=str(path), prompt="{text}\n\nSummary:", target="summary", metric="rouge")
    (example,) = get_task(config).load("train")
    assert example.context == "a long\nnote\n\nSummary:" and example.target == " first line second line"
    multi = TaskConfig(name="custom", train_file=str(path), prompt="{text}:", target="summary", metric="bleu",
                       single_line=False)
    assert get_task(multi).load("train")[0].target == " first line\nsecond line"


def test_bad_settings_are_one_line_errors(tmp_path):
    path = write_rows(tmp_path / "sums.jsonl")
    with pytest.raises(TaskDataError, match="task.name: custom needs task.prompt, task.metric"):
        get_task(TaskConfig(name="custom", train_file=str(path), target="answer"))
    with pytest.raises(TaskDataError, match="task.prompt names no column"):
        get_task(custom(path, prompt="Answer:"))
    with pytest.raises(TaskDataError, match=r"missing column\(s\) questoin"):
        get_task(custom(path, prompt="{questoin}")).load("train")
    with pytest.raises(TaskDataError, match="apply to task.name: custom only; the samsum task formats its own rows"):
        get_task(TaskConfig(name="samsum", prompt="{dialogue}"))
    with pytest.raises(TaskDataError, match="neither is set"):
        get_task(TaskConfig(name="custom", prompt="{q}", target="a", metric="bleu", source="hub")).check_split_roles("test")
    with pytest.raises(TaskDataError, match="overlap"):  # the built-in tasks' rule: training rows are never scored
        get_task(custom(path, test_slice="25:40")).check_split_roles("test")
    with pytest.raises(Exception, match=re.escape("task.metric: expected 'bleu' | 'rouge' | 'accuracy' | 'exact_match'")):
        config_from_dict({"model": {"name_or_path": "gpt2"}, "method": {"name": "ft"},
                          "task": {"name": "custom", "prompt": "{q}", "target": "a", "metric": "f1"}})


def test_the_scorers():
    assert exact_match(["Paris.", "the answer: rome"], [["paris"], ["Rome"]]) == {"exact_match": 50.0}
    # accuracy reads the generated words as a label: the longest label they start with
    refs = [["positive"], ["negative"], ["very negative"], ["positive"]]
    assert label_accuracy(["Positive, clearly", "negative!", "very negative indeed", "neutral"], refs) == {"accuracy": 75.0}
    from lora_ft.metrics.e2e import score_e2e

    predictions, references = ["the cat sat on the mat", "a dog ran"], [["the cat sat on a mat", "a cat sat"], ["a dog ran off"]]
    assert bleu(predictions, references)["BLEU"] == pytest.approx(score_e2e(predictions, references, meteor=False)["BLEU"])


def test_bleu_scores_every_target_of_a_prompt(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"mr": "name[Aromi]", "ref": "Aromi is a pub."}, {"mr": "name[Aromi]", "ref": "There is a pub, Aromi."},
            {"mr": "name[Zizzi]", "ref": "Zizzi."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = get_task(TaskConfig(name="custom", test_file=str(path), prompt="{mr} ->", target="ref", metric="bleu"))
    items = task.eval_items(task.load("test"))
    assert [i.references for i in items] == [("Aromi is a pub.", "There is a pub, Aromi."), ("Zizzi.",)]
    assert task.grouped_references  # the references file groups them as the E2E scorer's does


@pytest.mark.usefixtures("one_thread")
def test_a_custom_task_trains_evaluates_and_tables(tmp_path):
    from lora_ft.evaluate import evaluate_run
    from lora_ft.report.table import build_table
    from lora_ft.results import read_results
    from lora_ft.train import train
    from tiny_runs import tiny_run_config

    path = write_rows(tmp_path / "sums.jsonl")
    config = tiny_run_config(tmp_path / "run", epochs=1)
    config["task"] = {"name": "custom", "train_file": str(path), "validation_file": str(path), "test_file": str(path),
                      "train_slice": "0:30", "validation_slice": "30:35", "test_slice": "35:40",
                      "prompt": "Q: {question}\nA:", "target": "answer", "metric": "accuracy"}
    run = train(config_from_dict(config))
    results = read_results(run)
    assert results.status == "trained" and results.epochs[0].step == 4  # 29 examples, batch 8
    (evaluation,) = evaluate_run(run)
    assert set(evaluation.scores) == {"accuracy"} and evaluation.num_items == 5
    assert (run / "predictions-test-final.txt").read_text().count("\n") == 5
    table = json.loads(build_table([run], fmt="json"))
    assert table["layout"] == "custom-accuracy"
    (row,) = table["rows"]
    assert row["label"] == "gpt2 (LoRA r=2 q,v)"
    assert "none, the paper has no row for a task of your own" in " ".join(table["footnotes"])
