"""The run config the end-to-end tests share: a tiny random GPT-2 with the real tokenizer, trained on real E2E rows."""

from __future__ import annotations

import os
import socket
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def tiny_run_config(run_dir: Path, **training) -> dict:
    """LoRA r=2 on q,v of a 2-block GPT-2 (width 32); 32 training rows, 2 validation and 2 test MRs (no MR in two splits);
    `training` overrides the recipe."""
    return {
        "model": {
            "name_or_path": "gpt2",
            "tokenizer": str(SHARED / "gpt2-tokenizer"),
            "random_init": True,
            "config_overrides": {"n_layer": 2, "n_embd": 32, "n_head": 2},
        },
        "task": {
            "name": "e2e",
            # E2E slices count MRs: 32 training rows lie in the first 10 MRs; the validation loss is on 2 others
            "train_file": str(SHARED / "e2e" / "valid.txt"),
            "train_slice": "0:10",
            "validation_file": str(SHARED / "e2e" / "valid.txt"),
            "validation_slice": "10:12",
            "test_file": str(SHARED / "e2e" / "test.txt"),
            "max_train_examples": 32,
            "max_eval_examples": 2,
        },
        "method": {"name": "lora", "rank": 2, "alpha": 4, "dropout": 0.1, "targets": ["q", "v"]},
        "training": {"epochs": 2, "batch_size": 8, "learning_rate": 5e-3, "warmup_steps": 2, "seed": 3, **training},
        "decoding": {"num_beams": 2, "max_new_tokens": 6, "batch_size": 2},
        "output": {"dir": str(run_dir)},
    }


def tiny_llama_run_config(run_dir: Path, **training) -> dict:
    """`tiny_run_config` on a 2-block LLaMA (width 32, grouped-query attention, separate q/k/v/o projections) with the
    GPT-2 tokenizer's vocabulary: its config.json is written beside the run directory (weights: model.random_init)."""
    from transformers import LlamaConfig

    folder = Path(run_dir).parent / f"{Path(run_dir).name}-llama-config"
    LlamaConfig(
        num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, vocab_size=50257, bos_token_id=50256, eos_token_id=50256,
    ).save_pretrained(folder)
    config = tiny_run_config(run_dir, **training)
    config["model"] = {"name_or_path": str(folder), "tokenizer": str(SHARED / "gpt2-tokenizer"), "random_init": True}
    return config


def free_port() -> int:
    """A TCP port free on this host now, for a launcher's rendezvous (two launches never share 29500)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env(**extra: str) -> dict[str, str]:
    """The environment of an `accelerate launch` subprocess: one thread per process, this checkout's lora_ft."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **extra}
