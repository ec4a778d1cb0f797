"""An estimate of training memory from a run config, before any weight is loaded (shown by `lora-ft params`).

    estimate_training_memory(cfg, counts, model_config) -> {"weights", "gradients", "optimizer", "activations",
                                                            "logits", "total"}  (bytes)  + "fits" and "assumptions"

`counts` is build.count_for_config's {"trainable", "total"}; `model_config` the Hugging Face config (shapes only).
Formulas (one process, one GPU; b = training.batch_size, s = task.max_length, L blocks, h hidden, f MLP width,
h_kv = key/value width, V vocabulary):

- weights     = total parameters x bytes of model.dtype (4 float32, 2 bfloat16/float16).
- gradients   = trainable x 4: the trainable parameters (LoRA A/B, adapters, or all of them in full fine-tuning)
                get float32 gradients when model.dtype is float32; with a 16-bit model.dtype they are that dtype (2).
- optimizer   = trainable x 2 x 4: AdamW's m and v, both float32 (PaperAdamW keeps its state in float32 too).
- activations = b x s x L x per_token_block x a, a = activation bytes: 2 with a 16-bit model.dtype, else 4, bf16/fp16
                mixed precision included: with float32 weights autocast keeps the residual stream and the norms'
                inputs in float32 and saves a 16-bit copy of each matmul's input besides (measured on the CPU, GPT-2
                blocks, LoRA, bf16 autocast: 536 MB peak against 427 MB estimated at 2 bytes and 611 MB at 4; full
                fine-tuning 542 MB against 627 MB at 4; tests/test_memory.py). per_token_block counts the tensors autograd keeps per token in one block, in the
                style of Korthikanti et al. 2022 ("Reducing activation recomputation", §4.1) with no dropout and a fused
                (flash/SDPA) attention, i.e. no s x s score matrix:
                  2h  inputs of the two layer norms
                  h   input of the q/k/v projection, h + 2 h_kv their outputs (q, k, v), h attention output,
                  h   the output projection's input (heads merged: a copy), h the MLP's input
                  MLP: 4f for a gated MLP (LLaMA/Qwen: gate, its SiLU, up, their product);
                       5f for GPT-2's composed tanh GELU, `gelu_new` (the up-projection's output, tanh(.), 0.5x,
                          1 + tanh(.), their product: five saved tensors, measured with saved_tensors_hooks);
                       2f for a fused activation (gelu, relu, gelu_pytorch_tanh: its input and output)
                plus the embedding output (h per token). This counts the same tensors for LoRA and full fine-tuning:
                a frozen weight's input is still kept while anything earlier in the graph needs a gradient.
                With training.gradient_checkpointing each block keeps only its input (h per token) and backward
                recomputes one block at a time: b x s x (L x h + per_token_block + h) x a.
                b x s counts every example at task.max_length: an upper bound (padding to the batch's longest
                example, or packing without padding, lora_ft/packing.py, only lowers it).
- logits      = b x s x V x 4 x 3. lora_ft/loss.py runs the LM head on completion positions only, so this is an
                UPPER bound (every position a completion token; E2E batches are ~37% completion). x 3: the float32
                logits, cross-entropy's saved log-softmax and, in backward, their gradient, all tokens x V.
- total       = the sum: peak memory when the optimizer state, the gradients and the activations coexist (the
                last blocks' backward), plus the logits. It leaves out the CUDA context (~0.5-1 GB) and the caching
                allocator's fragmentation, so keep ~10% headroom.

Not modelled: FSDP/ZeRO sharding, gradient accumulation (it does not change the per-step batch: training.batch_size
is what one forward sees on one process), packing's attention mask (rows x width^2 booleans, width <= max(hidden
size, longest example): megabytes).
Checked against the measured peak of CPU training steps (tests/test_memory.py: within 20%).
"""

from __future__ import annotations

GB = 1e9
GPU_SIZES_GB = (24, 40, 80)
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def _shape(model_config) -> dict:
    """Hidden, MLP and key/value widths, blocks and vocabulary, from the Hugging Face config's standard names."""
    c = model_config
    h = c.hidden_size
    heads = c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    ff = (getattr(c, "intermediate_size", None) or getattr(c, "n_inner", None) or getattr(c, "ffn_dim", None)
          or 4 * h)
    gated = c.model_type in ("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "phi3")
    activation = getattr(c, "activation_function", None) or getattr(c, "hidden_act", None)
    mlp_saved = 4 if gated else 5 if activation == "gelu_new" else 2
    return {"mlp_saved": mlp_saved, "hidden": h, "mlp": ff, "kv_width": kv_heads * (h // heads), "blocks": c.num_hidden_layers,
            "vocab": c.vocab_size, "gated_mlp": gated}


def activation_elements_per_token_block(shape: dict) -> int:
    """Elements autograd keeps per token per block (the `activations` formula in the module docstring)."""
    h, f = shape["hidden"], shape["mlp"]
    attention = h + (h + 2 * shape["kv_width"]) + h + h
    mlp = h + shape["mlp_saved"] * f
    return 2 * h + attention + mlp


def estimate_training_memory(cfg, counts: dict, model_config) -> dict:
    """Bytes per component and their total for one training step of `cfg` (formulas: the module docstring)."""
    shape = _shape(model_config)
    weight_bytes = _BYTES[cfg.model.dtype]
    act_bytes = 2 if weight_bytes == 2 else 4  # float32 weights under autocast: about float32's (module docstring)
    tokens = cfg.training.batch_size * cfg.task.max_length
    per_block = activation_elements_per_token_block(shape)
    checkpointing = cfg.training.gradient_checkpointing
    if checkpointing:  # the blocks' inputs, one block's recomputed activations, the embedding output
        per_token = shape["blocks"] * shape["hidden"] + per_block + shape["hidden"]
    else:
        per_token = shape["blocks"] * per_block + shape["hidden"]
    parts = {
        "weights": counts["total"] * weight_bytes,
        "gradients": counts["trainable"] * weight_bytes,
        "optimizer": counts["trainable"] * 2 * 4,
        "activations": tokens * per_token * act_bytes,
        "logits": tokens * shape["vocab"] * 4 * 3,
    }
    total = sum(parts.values())
    return {
        **parts,
        "total": total,
        "fits": {f"{g}GB": total <= g * GB for g in GPU_SIZES_GB},
        "assumptions": {"tokens_per_step": tokens, "activation_bytes": act_bytes, "weight_bytes": weight_bytes,
                        "activation_elements_per_token": per_token,
                        "logits": "upper bound: every position a completion token",
                        "gradient_checkpointing": checkpointing},
    }


def format_memory(m: dict) -> str:
    """Human lines for `lora-ft params`."""
    fits = [g for g in GPU_SIZES_GB if m["fits"][f"{g}GB"]]
    verdict = f"fits a GPU of {fits[0]} GB" if fits else f"does not fit one GPU of {GPU_SIZES_GB[-1]} GB"
    parts = "  ".join(f"{k} {m[k] / GB:.2f}" for k in ("weights", "gradients", "optimizer", "activations", "logits"))
    return (f"training memory (estimate, one GPU) {m['total'] / GB:.2f} GB: {verdict} (24/40/80 GB)\n"
            f"  GB: {parts}\n"
            f"  batch x length = {m['assumptions']['tokens_per_step']:,} tokens per step; logits are an upper bound "
            f"(every position a completion token); "
            f"{'gradient checkpointing' if m['assumptions']['gradient_checkpointing'] else 'no gradient checkpointing'}")


def peak_memory_bytes(device) -> int:
    """The process's peak memory so far (a torch.device's): the GPU's allocations on CUDA, else the resident set size."""
    import resource

    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB
