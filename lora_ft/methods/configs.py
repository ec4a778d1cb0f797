"""Every method's config section, as typed dataclasses with help text.

Kept apart from the implementations (which import torch) so that validating a config takes milliseconds:
`lora-ft config validate` and the pre-flight of `lora-ft train` never import torch.
`check_architecture` holds the checks that need only the architecture facts (lora_ft/models) and the model's config
(a transformers config, or its config.json mapping when `config validate` reads it without transformers), not weights.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Literal

from ..models.architecture import Architecture
from ..schema import ConfigError, option, require


@dataclass
class MethodConfig:
    """Base of every method's config section; subclasses add their own fields (each with help text)."""

    def check_architecture(self, arch: Architecture, model_config=None) -> None:
        """Raise ConfigError if this config cannot apply to models of `arch` (e.g. a weight the family lacks), or to
        the model of `model_config` when given (e.g. more blocks than it has)."""


@dataclass
class LoraConfig(MethodConfig):
    rank: int = option(4, help="r, the rank of each low-rank update (paper: 4 for GPT-2 on E2E; 1 or 8 for GPT-3)")
    alpha: float = option(32.0, help="alpha: the update B A is scaled by alpha / r (paper: 32 for GPT-2)")
    dropout: float = option(0.1, help="dropout on the input of the low-rank branch only (paper: 0.1 for GPT-2)")
    targets: list[str] = option(
        ["q", "v"], help="weights to adapt in every block: q, k, v, o, mlp_up, mlp_gate, mlp_down (aliases: attn, mlp)"
    )
    rank_per_target: dict[str, int] = option(
        {}, help="rank for particular weights, e.g. {o: 8}; weights fused in one projection (GPT-2 q,k,v) share a rank"
    )
    init_a: Literal["gaussian", "kaiming"] = option(
        "gaussian", help="A's init: 'gaussian' N(0, 0.02^2) as the authors' code at paper time; 'kaiming' uniform as loralib today"
    )
    layers: list[int] | None = option(None, help="indices of the blocks to adapt (default: every block)")

    def __post_init__(self):
        require(self.rank >= 1, f"method.rank must be a positive integer, got {self.rank}")
        require(self.alpha > 0, f"method.alpha must be positive, got {self.alpha}")
        require(0.0 <= self.dropout < 1.0, f"method.dropout must be in [0, 1), got {self.dropout}")
        require(len(self.targets) > 0, "method.targets is empty: name at least one weight, e.g. [q, v]")
        for name, r in self.rank_per_target.items():
            require(r >= 1, f"method.rank_per_target.{name} must be a positive integer, got {r}")

    def rank_of(self, weight: str) -> int:
        return self.rank_per_target.get(weight, self.rank)

    def plan(self, arch: Architecture) -> dict[str, list[str]]:
        """Module path inside a block -> the logical weights adapted in it (several for a fused projection)."""
        weights = arch.resolve_weights(self.targets)
        for unknown in set(self.rank_per_target) - set(weights):
            raise ConfigError(f"method.rank_per_target names {unknown!r}, which is not among method.targets {weights}")
        groups: dict[str, list[str]] = {}
        for name in weights:
            groups.setdefault(arch.weights[name].module, []).append(name)
        for module, names in groups.items():
            ranks = sorted({self.rank_of(n) for n in names})
            if len(ranks) > 1:
                raise ConfigError(
                    f"{', '.join(names)} live in one fused projection ({arch.name} '{module}') and must share one rank; "
                    f"method.rank_per_target gives them {ranks}"
                )
        return groups

    def check_architecture(self, arch: Architecture, model_config=None) -> None:
        self.plan(arch)
        num_layers = arch.num_layers(model_config) if model_config is not None else None
        for layer in self.layers or []:
            if num_layers is not None and not 0 <= layer < num_layers:
                raise ConfigError(
                    f"method.layers contains {layer}, but the model has {num_layers} blocks (0..{num_layers - 1})"
                )


@dataclass
class AdapterConfig(MethodConfig):
    bottleneck: int = option(help="r, the adapter's inner width (paper GPT-2 M Adapter^L: 6 -> 0.37M, 224 -> 11.09M)")
    activation: Literal["relu", "gelu", "tanh"] = option("relu", help="nonlinearity between the down and up projections")

    def __post_init__(self):
        require(self.bottleneck >= 1, f"method.bottleneck must be a positive integer, got {self.bottleneck}")


@dataclass
class PrefixConfig(MethodConfig):
    prefix_length: int = option(help="l_p, virtual tokens before the context (paper GPT-3: PreEmbed 256, PreLayer 8)")
    infix_length: int = option(0, help="l_i, virtual tokens between context and target (paper GPT-3: 8)")
    init_text: str | None = option(
        None,
        help="real words the virtual tokens start as (Li & Liang): the prefix and the infix each end with them, line "
        "breaks before them when the segment is longer; "
        "null: the task's (E2E ' table-to-text:', SAMSum ' Summary:', MNLI ' Answer:')",
    )

    def __post_init__(self):
        require(self.prefix_length >= 0, f"method.prefix_length must be >= 0, got {self.prefix_length}")
        require(self.infix_length >= 0, f"method.infix_length must be >= 0, got {self.infix_length}")
        require(self.prefix_length + self.infix_length > 0, "method.prefix_length + method.infix_length must be at least 1")


@dataclass
class BitFitConfig(MethodConfig):
    def check_architecture(self, arch: Architecture, model_config=None) -> None:
        if model_config is not None and not arch.has_bias_vectors(model_config):
            examples = f" (e.g. {arch.examples})" if arch.examples else ""
            # The head clause after "cannot apply: " is the short reason a table's n/a cell prints
            # (lora_ft/report/not_applicable.py): keep it short and before the first " (" or "; ".
            raise ConfigError(
                f"method.name: bitfit cannot apply: {arch.name} models have no bias vectors{examples}, and BitFit "
                "trains only those; choose another method (e.g. lora)"
            )


@dataclass
class FullFTConfig(MethodConfig):
    pass


@dataclass
class TopKConfig(MethodConfig):
    top_k: int = option(2, help="how many of the last blocks train (with the final norm); the paper's FT^Top2 is 2")

    def __post_init__(self):
        require(self.top_k >= 1, f"method.top_k must be a positive integer, got {self.top_k}")

    def check_architecture(self, arch: Architecture, model_config=None) -> None:
        layers = arch.num_layers(model_config) if model_config is not None else None
        if layers is not None and self.top_k > layers:
            raise ConfigError(f"method.top_k is {self.top_k} but the model has only {layers} blocks")


@dataclass
class PeftMethodConfig(MethodConfig):
    peft: dict[str, Any] = option(
        help="a peft config as peft.get_peft_config takes it: peft_type and its own fields, e.g. {peft_type: LORA, r: 8, "
        "lora_alpha: 16, target_modules: [q_proj, v_proj], use_dora: true}; task_type is CAUSAL_LM. Applied with "
        "peft's get_peft_model and trained by lora-ft's loop; the types lora-ft refuses, and why: "
        "lora_ft/methods/peft_types.py"
    )

    def __post_init__(self):
        from .peft_types import known_types, refusal

        require(isinstance(self.peft.get("peft_type"), str),
                "method.peft needs a peft_type, e.g. {peft_type: LORA, r: 8} (peft's PeftType names)")
        self.peft = {**self.peft, "peft_type": self.peft["peft_type"].upper()}
        peft_type = self.peft["peft_type"]
        if peft_type not in known_types():
            close = difflib.get_close_matches(peft_type, known_types(), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"method.peft.peft_type {peft_type!r} is not a peft type lora-ft knows{hint} "
                              f"(known: {', '.join(sorted(known_types()))})")
        problem = refusal(self.peft)
        if problem:
            raise ConfigError(f"method.peft: {problem}")
        task_type = self.peft.get("task_type", "CAUSAL_LM")
        require(str(task_type).upper() == "CAUSAL_LM",
                f"method.peft.task_type is {task_type!r}; lora-ft trains causal language models: CAUSAL_LM (or leave it out)")
        require(not self.peft.get("inference_mode"), "method.peft.inference_mode is true: peft then trains nothing; "
                "leave it out (eval --adapter scores a saved adapter)")

    def check_architecture(self, arch: Architecture, model_config=None) -> None:
        """The peft config against peft's own config class (its field names and checks): imports peft."""
        from .peft_types import build_peft_config

        build_peft_config(self.peft)
