"""Write configs/ : one YAML per row of the paper's Tables 3 and 4.

    python scripts/make_configs.py          # rewrites configs/e2e_*.yaml and configs/{wikisql,mnli,samsum}_*.yaml

The configs are plain YAML files meant to be read and edited; this script only keeps the 36 of them consistent.
Recipes: paper.md (Table 11 for GPT-2 on E2E, Table 12 for GPT-3). Learning rates the paper does not give for the
GPT-2 baselines it took from prior work are marked as our choice in each file's comment.
"""

from __future__ import annotations

from pathlib import Path

import yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# The authors' AdamW (lora_ft/optim.py): their E2E code's optimizer. Table 4's GPT-3 code is not public; the authors'
# other public code (the NLU examples, on transformers 4.4's Trainer) uses the same AdamW, so the GPT-3 rows use it too.
OPTIMIZER = "adamw_paper"

E2E_TRAINING = {  # paper Table 11
    "epochs": 5, "batch_size": 8, "optimizer": OPTIMIZER, "learning_rate": 2e-4, "weight_decay": 0.01, "adam_betas": [0.9, 0.999],
    "adam_epsilon": 1e-6, "warmup_steps": 500, "label_smoothing": 0.1, "max_grad_norm": None, "seed": 110,
}
E2E_DECODING = {"split": "test", "num_beams": 10, "length_penalty": 0.9, "no_repeat_ngram_size": 4, "max_new_tokens": 64}
E2E_TASK = {"name": "e2e", "max_length": 512}

# name suffix -> (method section, learning rate, note)
E2E_ROWS = {
    "gpt2m": {
        "ft": ({"name": "ft"}, 5e-5, "Table 3 GPT-2 M (FT)*: lr 5e-5 is our choice (the row comes from prior work)"),
        "adapter_l_0.37m": ({"name": "adapter_l", "bottleneck": 6}, 1e-4,
                            "Table 3 GPT-2 M (Adapter^L)* 0.37M: bottleneck 6 gives 368,784; lr is our choice"),
        "adapter_l_11m": ({"name": "adapter_l", "bottleneck": 224}, 1e-4,
                          "Table 3 GPT-2 M (Adapter^L)* 11.09M: bottleneck 224 gives 11,089,152; lr is our choice"),
        "adapter_h_11m": ({"name": "adapter_h", "bottleneck": 112}, 1e-4,
                          "Table 3 GPT-2 M (Adapter^H) 11.09M: bottleneck 112 gives 11,064,576, the closest size "
                          "(113 gives 11,162,928); lr is our choice"),
        "ft_top2": ({"name": "ft_top", "top_k": 2}, 5e-5,
                    "Table 3 GPT-2 M (FT^Top2)*: last 2 blocks + final LayerNorm = 25,194,496; lr is our choice"),
        "prelayer": ({"name": "prelayer", "prefix_length": 10, "infix_length": 0}, 8e-5,
                     "Table 3 GPT-2 M (PreLayer)*: Li & Liang's prefix length 10; the paper's count formula "
                     "L*d*(l_p+l_i) gives 245,760 (the table prints 0.35M); lr is our choice"),
        "r4": ({"name": "lora", "rank": 4, "alpha": 32, "dropout": 0.1, "targets": ["q", "v"], "init_a": "gaussian"},
               2e-4, "Table 3 GPT-2 M (LoRA): the paper's recipe (Table 11); 393,216 trainable (the table prints 0.35M)"),
    },
    "gpt2l": {
        "ft": ({"name": "ft"}, 5e-5, "Table 3 GPT-2 L (FT)*: lr 5e-5 is our choice (the row comes from prior work)"),
        "adapter_l_0.88m": ({"name": "adapter_l", "bottleneck": 8}, 1e-4,
                            "Table 3 GPT-2 L (Adapter^L) 0.88M: bottleneck 8 gives 875,808; lr is our choice"),
        "adapter_l_23m": ({"name": "adapter_l", "bottleneck": 248}, 1e-4,
                          "Table 3 GPT-2 L (Adapter^L) 23.00M: bottleneck 248 gives 23,002,848; lr is our choice"),
        "prelayer": ({"name": "prelayer", "prefix_length": 10, "infix_length": 0}, 8e-5,
                     "Table 3 GPT-2 L (PreLayer)*: prefix length 10 (Li & Liang); lr is our choice"),
        "r4": ({"name": "lora", "rank": 4, "alpha": 32, "dropout": 0.1, "targets": ["q", "v"], "init_a": "gaussian"},
               2e-4, "Table 3 GPT-2 L (LoRA): the paper's recipe (Table 11); 737,280 trainable (the table prints 0.77M)"),
    },
}
MODELS = {"gpt2m": "gpt2-medium", "gpt2l": "gpt2-large"}

# Table 4 on a GPT-3-class stand-in (GPT-3 175B is not public).
STAND_IN = "Qwen/Qwen2.5-7B"
GPT3_TASKS = {  # task -> (max_length, note)
    "wikisql": (384, "WikiSQL logical-form accuracy on validation"),
    "mnli": (768, "MNLI-matched accuracy on validation_matched"),
    "samsum": (2048, "SAMSum ROUGE-1/2/L on test"),
}
# The paper's batch of 128 as micro-batch x gradient accumulation: wikisql 8 x 16, mnli 4 x 32, samsum 2 x 64
# (8 x 384, 4 x 768 and 2 x 2048 tokens per forward). At 128 x 1 they would need hundreds of GB.
GPT3_MICRO_BATCH = {"wikisql": 8, "mnli": 4, "samsum": 2}
# Memory, as `lora-ft params` estimates it (one 80 GB GPU, <= 72 GB to keep 10% headroom). model.dtype float32: the
# trained tensors (LoRA A/B, adapters, prefixes, biases) are created in the base weights' dtype, and AdamW updates below
# bfloat16's resolution would be lost; bf16 autocast does the compute (training.mixed_precision).
# - every parameter-efficient row (LoRA, adapters, prefixes, BitFit): weights 30.5 GB + activations + logits.
#   wikisql, mnli: 71.2 GB without gradient checkpointing: fits. samsum: 84.7 GB without, 41.3 GB with it: the
#   samsum rows set training.gradient_checkpointing (it recomputes each block's forward in backward: slower).
# - full fine-tuning (FT): weights, gradients and AdamW state alone are 122 GB: it does not fit one 80 GB GPU and
#   needs FSDP (`accelerate launch` with an FSDP config) over 2 GPUs, which shard the 122 GB and split the
#   micro-batch: 61 GB + half the activations and logits per GPU, 65-66 GB with gradient checkpointing (81-88 GB
#   without), so the FT rows set it too.
GPT3_CHECKPOINTING_TASKS = ("samsum",)
GPT3_BATCH = 128
GPT3_ROWS = {  # suffix -> (method, lr)   (paper Table 12)
    "ft": ({"name": "ft"}, 5e-6),
    "bitfit": ({"name": "bitfit"}, 1.6e-3),
    "preembed": ({"name": "preembed", "prefix_length": 256, "infix_length": 8}, 5e-4),
    "prelayer": ({"name": "prelayer", "prefix_length": 8, "infix_length": 8}, 1e-4),
    "adapter_h_b1": ({"name": "adapter_h", "bottleneck": 1}, 1e-4),
    "adapter_h_b8": ({"name": "adapter_h", "bottleneck": 8}, 1e-4),
    "lora_r1": ({"name": "lora", "rank": 1, "alpha": 1, "dropout": 0.0, "targets": ["q", "v"]}, 2e-4),
    "lora_r8": ({"name": "lora", "rank": 8, "alpha": 8, "dropout": 0.0, "targets": ["q", "v"]}, 2e-4),
}


def write(name: str, note: str, config: dict) -> None:
    header = f"# {note}\n#\n#   lora-ft train --config configs/{name}.yaml\n#   lora-ft eval --run {config['output']['dir']}\n"
    (CONFIGS / f"{name}.yaml").write_text(header + yaml.safe_dump(config, sort_keys=False))


def main() -> None:
    CONFIGS.mkdir(exist_ok=True)
    for model_key, rows in E2E_ROWS.items():
        for suffix, (method, lr, note) in rows.items():
            name = f"e2e_{model_key}_{suffix}"
            write(name, note, {
                "model": {"name_or_path": MODELS[model_key], "dropout": 0.0},
                "task": dict(E2E_TASK),
                "method": method,
                "training": {**E2E_TRAINING, "learning_rate": lr},
                "decoding": dict(E2E_DECODING),
                "output": {"dir": f"runs/{name}"},
            })
    for task, (max_length, what) in GPT3_TASKS.items():
        for suffix, (method, lr) in GPT3_ROWS.items():
            name = f"{task}_gpt3standin_{suffix}"
            note = (f"Table 4 ({what}), {suffix}: the paper's GPT-3 recipe (Table 12) on {STAND_IN}, "
                    "an open stand-in for GPT-3 175B; scores are not comparable one-to-one with the paper's")
            checkpointing = suffix == "ft" or task in GPT3_CHECKPOINTING_TASKS
            if suffix == "ft":
                note += ("\n# Memory: full fine-tuning of 7.6B parameters does not fit one 80 GB GPU (`lora-ft params`: "
                         "weights, gradients and AdamW state alone are 122 GB); shard it with FSDP over 2 GPUs (61 GB "
                         "each), with gradient checkpointing for the activations")
            elif checkpointing:
                note += ("\n# Memory: fits one 80 GB GPU with gradient checkpointing (`lora-ft params`: 41 GB; 85 GB "
                         "without)")
            write(name, note, {
                "model": {"name_or_path": STAND_IN, "dtype": "float32"},  # bf16 autocast; trained tensors fp32
                # MNLI and WikiSQL are scored on their dev split, as the paper's numbers were; the validation loss
                # (and --epochs best) then select on scored rows: allowed explicitly, never by default.
                "task": {"name": task, "max_length": max_length,
                         **({} if task == "samsum" else {"select_on_scored_split": True})},
                "method": method,
                "training": {
                    "epochs": 2, "batch_size": GPT3_MICRO_BATCH[task],
                    "gradient_accumulation_steps": GPT3_BATCH // GPT3_MICRO_BATCH[task], "optimizer": OPTIMIZER, "learning_rate": lr, "weight_decay": 0.1,
                    "warmup_tokens": 250_000, "label_smoothing": 0.0, "mixed_precision": "bf16",
                    "gradient_checkpointing": checkpointing, "seed": 1,
                },
                "decoding": {"split": "test" if task == "samsum" else "validation", "num_beams": 1,
                             "length_penalty": 1.0, "no_repeat_ngram_size": 0,
                             "max_new_tokens": 128 if task == "samsum" else 64, "stop_at_double_newline": task != "samsum"},
                "output": {"dir": f"runs/{name}"},
            })


if __name__ == "__main__":
    main()
