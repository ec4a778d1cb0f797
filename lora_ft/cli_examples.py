"""The examples that `lora-ft <command> --help` ends with (kept apart so that cli.py stays the parser alone)."""

from __future__ import annotations

import argparse

EXIT_CODES = "exit codes: 0 done; 1 a bug in lora-ft (with its traceback: please report it); 2 a mistake in the input, " \
    "explained in one line; 130 / 143 / 138 training stopped by Ctrl-C / SIGTERM / SIGUSR1 (after a checkpoint), " \
    "resumable with --resume"

EXAMPLES = {
    "train": """
  lora-ft train --config configs/e2e_gpt2m_r4.yaml
  lora-ft train --config configs/e2e_gpt2m_r4.yaml training.seed=111 output.dir=runs/r4-s111
  lora-ft train --config configs/e2e_gpt2m_r4.yaml --resume           # continue from the last checkpoint
  lora-ft train --config configs/e2e_gpt2m_r4.yaml --resume auto      # continue, or start: a requeued job's command
  lora-ft train --config configs/e2e_gpt2m_r4.yaml training.report_to=[tensorboard]
  accelerate launch --multi_gpu --num_processes 8 -m lora_ft train --config configs/e2e_gpt2m_r4.yaml""",
    "eval": """
  lora-ft eval --run runs/e2e_gpt2m_r4                   # final weights on decoding.split (test)
  lora-ft eval --run runs/e2e_gpt2m_r4 --epochs all      # every epoch's checkpoint
  lora-ft eval --run runs/e2e_gpt2m_r4 --base            # the untrained base model, as epoch 0
  lora-ft eval --task e2e --predictions P.txt --references R.txt --json""",
    "params": """
  lora-ft params --config configs/e2e_gpt2m_r4.yaml
  lora-ft params --config configs/e2e_gpt2m_r4.yaml method.rank=8 --json""",
    "config": """
  lora-ft config show configs/e2e_gpt2m_r4.yaml method.rank=8      # the resolved config
  lora-ft config validate configs/e2e_gpt2m_r4.yaml
  lora-ft config show configs/e2e_gpt2m_r4.yaml method.name=bitfit  # switch method: LoRA's keys are dropped
  lora-ft config help --method lora                                # every key, type, default and help""",
    "export": """
  lora-ft export --run runs/e2e_gpt2m_r4 --out export/peft                    # for AutoPeftModelForCausalLM
  lora-ft export --run runs/e2e_gpt2m_r4 --out export/merged --format merged  # plain transformers model
  lora-ft export --run runs/e2e_gpt2m_adapter_h_11m --out export/h --format lora-ft  # any method; loads with lora-ft""",
    "table": """
  lora-ft table --runs runs/                                   # Table 3 / 4 as markdown
  lora-ft table --runs runs/ --format latex --out table3.tex
  lora-ft table --runs results/mini_paper/table3 --compare-with gpt2-medium   # a stand-in beside GPT-2 M's rows
  lora-ft table --runs runs/ --epoch best-validation          # each seed's epoch by validation loss, not test score
  lora-ft table --searches results/mini_paper/search          # the learning-rate searches (selection.json files)""",
    "sweep": """
  lora-ft sweep --config configs/sweeps/rank_sweep.yaml --dry-run
  lora-ft sweep --config configs/sweeps/rank_sweep.yaml --print-commands --accelerate   # one line per run
  lora-ft sweep --config configs/sweeps/rank_sweep.yaml""",
    "plot": """
  lora-ft plot --runs runs/ --out figures/
  lora-ft plot --runs runs/ --out figures/ --kind rank
  lora-ft plot --runs results/mini_paper/search --out figures/ --kind search   # criterion vs learning rate""",
    "analyze": """
  lora-ft analyze --runs runs/rank8 runs/rank64 --out analysis/""",
}


def add_examples(parser: argparse.ArgumentParser, commands: dict[str, argparse.ArgumentParser]) -> None:
    """Give each command's --help its examples, and the main --help the exit codes."""
    parser.epilog = EXIT_CODES
    for name, command in commands.items():
        command.epilog = "examples:" + EXAMPLES[name] + "\n\n" + EXIT_CODES
        command.formatter_class = argparse.RawDescriptionHelpFormatter
