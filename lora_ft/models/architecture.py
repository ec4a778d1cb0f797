"""What every method needs to know about a model family, and nothing else.

One `Architecture` per family (gpt2.py, llama.py, opt.py, neox.py, gptj.py) says where the blocks live and, inside a
block, where each logical weight lives: W_q, W_k, W_v, W_o and the MLP weights. A weight may be a *slice* of a fused
projection (GPT-2's `c_attn` holds q, k, v one after the other; GPT-NeoX's `query_key_value` interleaves them per head),
so a location is (module path, which slice). Methods ask this module, never a model's attribute names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from ..schema import ConfigError

if TYPE_CHECKING:  # torch is imported lazily: config validation must stay fast (no torch import)
    import torch
    from torch import nn

# The logical weights a config may name. MLP names follow LLaMA's: up (d -> d_ff), gate (LLaMA only), down (d_ff -> d).
WEIGHT_NAMES = ("q", "k", "v", "o", "mlp_up", "mlp_gate", "mlp_down")
WEIGHT_ALIASES = {"attn": ("q", "k", "v", "o"), "mlp": ("mlp_up", "mlp_gate", "mlp_down")}


@dataclass(frozen=True)
class WeightLocation:
    """Where a logical weight lives inside one block.

    `fused` describes how the output features of a fused projection are laid out:
    - None: the module is this weight alone;
    - "concat": `parts` equal slices one after the other ([q | k | v], GPT-2; [gate | up], Phi-3's MLP);
    - "per_head": per head, `parts` slices of head_dim each ([q_h0 k_h0 v_h0 | q_h1 ...], GPT-NeoX);
    - "qkv": [q | k | v] with k and v narrower than q under grouped-query attention (heads x head_dim, then
      kv heads x head_dim twice: Phi-3's qkv_proj).
    """

    module: str
    fused: Literal["concat", "per_head", "qkv"] | None = None
    part: int = 0
    parts: int = 1

    def output_index(self, out_features: int, num_heads: int, num_kv_heads: int | None = None) -> "torch.Tensor | None":
        """Indices of this weight's output features in the (fused) module; None for an unfused module."""
        if self.fused is None:
            return None
        import torch

        if self.fused == "qkv":
            kv = num_kv_heads or num_heads
            head_dim = out_features // (num_heads + 2 * kv)
            bounds = [0, num_heads * head_dim, (num_heads + kv) * head_dim, out_features]
            return torch.arange(bounds[self.part], bounds[self.part + 1])
        width = out_features // self.parts
        if self.fused == "concat":
            return torch.arange(self.part * width, (self.part + 1) * width)
        head_dim = width // num_heads
        starts = torch.arange(num_heads) * (self.parts * head_dim) + self.part * head_dim
        return (starts[:, None] + torch.arange(head_dim)[None, :]).reshape(-1)


@dataclass(frozen=True)
class Architecture:
    """The architecture facts of one model family (paths are dotted attribute paths)."""

    name: str
    model_types: tuple[str, ...]  # Hugging Face `config.model_type` values this family covers
    blocks: str  # the ModuleList of transformer blocks, from the model root
    input_embedding: str  # token embedding, from the model root
    final_norm: str  # the LayerNorm/RMSNorm after the last block, from the model root
    weights: dict[str, WeightLocation]  # logical weight -> location inside a block
    attention_output: str  # module inside a block whose output is the attention sublayer's, before the residual add
    mlp_output: str  # likewise for the MLP sublayer
    dropout_keys: tuple[str, ...] = ()  # config attributes holding attention/residual/embedding dropout
    num_heads_key: str = "num_attention_heads"
    hidden_size_key: str = "hidden_size"
    num_layers_key: str = "num_hidden_layers"
    # Bias vectors (all BitFit trains). Empty: every model of the family has them (LayerNorm biases at least).
    # Otherwise they exist only where one of these config switches is true; the value is the switch's default.
    bias_switches: dict[str, bool] = field(default_factory=dict)
    biased_model_types: tuple[str, ...] = ()  # model types with biases whatever the switches say (Qwen2's q, k, v)
    examples: str = ""  # well-known models of the family, for messages
    notes: str = ""
    extra: dict = field(default_factory=dict)
    # the output projection to the vocabulary, from the model root (lora_ft.loss applies it to completion positions)
    lm_head: str = "lm_head"
    # Whether transformers builds this family's attention mask from `position_ids` (masking_utils), so that examples
    # packed into one row with positions restarting at 0 attend only within themselves (lora_ft/packing.py).
    packing: bool = True

    def block_list(self, model: "nn.Module") -> "nn.ModuleList":
        return model.get_submodule(self.blocks)

    def resolve_weights(self, names: list[str] | tuple[str, ...]) -> list[str]:
        """Expand aliases ("attn", "mlp") and check every name exists in this family; returns logical names."""
        resolved: list[str] = []
        for name in names:
            expanded = [n for n in WEIGHT_ALIASES.get(name, (name,)) if n in self.weights or name not in WEIGHT_ALIASES]
            for n in expanded:
                if n not in self.weights:
                    raise ConfigError(
                        f"method.targets: weight {n!r} does not exist in {self.name} models "
                        f"(this family has: {', '.join(self.weights)}; aliases: attn, mlp)"
                    )
                if n not in resolved:
                    resolved.append(n)
        return resolved

    def num_heads(self, config) -> int:
        return getattr(config, self.num_heads_key)

    def num_kv_heads(self, config) -> int:
        """Heads of k and v (grouped-query attention: fewer than q's); q's where the config states none."""
        return config_value(config, "num_key_value_heads") or config_value(config, self.num_heads_key)

    def hidden_size(self, config) -> int:
        return getattr(config, self.hidden_size_key)

    def num_layers(self, config) -> int | None:
        """Blocks in a model of `config` (a transformers config or its config.json mapping); None if not stated."""
        return config_value(config, self.num_layers_key)

    def has_bias_vectors(self, config) -> bool:
        """Whether a model of `config` (a transformers config or its config.json mapping) has any bias vector."""
        if not self.bias_switches or config_value(config, "model_type") in self.biased_model_types:
            return True
        return any(bool(config_value(config, key, default)) for key, default in self.bias_switches.items())


def max_positions(config) -> int | None:
    """How many tokens one sequence may have in a model of `config` (a transformers config or its config.json mapping):
    GPT-2's n_positions (1,024), the others' max_position_embeddings; None where the config does not say."""
    for key in ("n_positions", "max_position_embeddings"):
        value = config_value(config, key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def config_value(config, key: str, default=None):
    """`key` of a transformers config object or of its config.json mapping (quick checks read the JSON)."""
    if isinstance(config, dict):
        return config.get(key, default)
    return getattr(config, key, default)
