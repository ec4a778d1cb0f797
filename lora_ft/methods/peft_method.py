"""`method.name: peft`: any peft method lora-ft can train (lora_ft/methods/peft_types.py), applied with peft's own
`get_peft_model` and trained, counted, exported and decoded by lora-ft.

The model lora-ft trains stays the transformers model: `get_peft_model` injects a tuner's layers into it in place, and
the `PeftModel` it returns is kept (`PeftMethod.peft_model`) for what only it does: its own parameter count (checked
against lora-ft's when the method applies), `save_pretrained` (the "peft" export), `merge_and_unload` (the "merged"
export) and merging before decoding. For the tuner types peft's wrapper forward only passes the call on, so the
model's forward is peft's.

A prompt type's virtual tokens (PROMPT_TUNING, P_TUNING) do not depend on the input: peft's wrapper forward prepends
`get_prompt()` to the input embeddings. Here they are lora-ft's virtual-token slots instead (the ids past the
vocabulary that lora_ft/data.py puts before each context, as for PreEmbed), whose embedding is that same `get_prompt()`
(`PeftPromptEmbedding`): the same positions and vectors as peft's forward, but packable, with the loss on the
completion only, and decoded with the paper's beam search and its cache.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any, Callable

import torch
from torch import nn

from ..models import Architecture
from ..schema import ConfigError
from .base import Method, NeedsWeights, count_parameters, freeze
from .configs import PeftMethodConfig
from .peft_types import PROMPT_TYPES, build_peft_config, peft_label_parts, settings_of

logger = logging.getLogger("lora_ft.methods.peft")

# Tuners whose update peft cannot fold into the base weights (BEFT: not into a layer without a bias).
UNMERGEABLE = ("BEFT", "ADAPTION_PROMPT")


class PeftPromptEmbedding(nn.Module):
    """The model's token embedding; the ids past its vocabulary are a peft prompt type's virtual tokens, embedded as
    peft's `get_prompt` embeds them. Holds peft's prompt encoder as a submodule, so that its parameters are the model's
    (lora-ft's optimizer, checkpoints and counts see them)."""

    def __init__(self, base: nn.Module, prompt_encoder: nn.Module, prompt: Callable[[], torch.Tensor]):
        super().__init__()
        self.base = base
        self.prompt_encoder = prompt_encoder
        self.vocab_size = base.num_embeddings
        self.__dict__["_prompt"] = prompt  # peft's bound get_prompt: not a submodule (the PeftModel holds the model)

    @property
    def weight(self) -> torch.Tensor:  # transformers reads `get_input_embeddings().weight`
        return self.base.weight

    @property
    def num_embeddings(self) -> int:
        return self.vocab_size

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        is_virtual = input_ids >= self.vocab_size
        embedded = self.base(torch.where(is_virtual, 0, input_ids))
        if not bool(is_virtual.any()):
            return embedded
        vectors = self._prompt().to(embedded.dtype)
        return torch.where(is_virtual[..., None], vectors[(input_ids - self.vocab_size).clamp(min=0)], embedded)


class PeftMethod(Method):
    name = "peft"
    label = "peft"
    Config = PeftMethodConfig

    def __init__(self, config: PeftMethodConfig):
        super().__init__(config)
        self.peft_type = config.peft["peft_type"]
        self.label = f"peft {peft_label_parts(config.peft)[0]}"
        self.mergeable = self.peft_type not in PROMPT_TYPES and self.peft_type not in UNMERGEABLE
        self.peft_model = None

    def peft_config(self, base_model: str | None = None):
        return build_peft_config(self.config.peft, base_model)

    def apply(self, model: nn.Module, arch: Architecture) -> None:
        from peft import get_peft_model

        freeze(model)
        try:
            peft_model = get_peft_model(model, self.peft_config())
        except (ValueError, TypeError, KeyError, NotImplementedError, RuntimeError) as exc:
            if any(p.is_meta for p in model.parameters()):
                raise NeedsWeights(f"{self.peft_type} initialises from the base weights") from exc
            raise ConfigError(f"method.peft ({self.peft_type}) cannot apply to this {arch.name} model: "
                              f"{' '.join(str(exc).split())}") from None
        self.attach(peft_model, model, arch)

    def attach(self, peft_model, model: nn.Module, arch: Architecture) -> None:
        """Keep `peft_model` (a PeftModel around `model`), give a prompt type its virtual-token embedding, and check
        that every parameter peft trains is one of the model's (lora-ft's loop trains the model)."""
        self.peft_model = peft_model
        if self.peft_type in PROMPT_TYPES:
            adapter = peft_model.active_adapter
            embedding = PeftPromptEmbedding(model.get_submodule(arch.input_embedding), peft_model.prompt_encoder[adapter],
                                            lambda: peft_model.get_prompt(batch_size=1)[0])
            model.set_submodule(arch.input_embedding, embedding)
        peft_count = peft_model.get_nb_trainable_parameters()[0]
        ours = count_parameters(model)[0]
        if peft_count != ours:  # a type whose trained parameters live outside the model: listed as refused
            raise RuntimeError(f"peft trains {peft_count} parameters of {self.peft_type}, the model holds {ours} of them")
        self.peft_trainable = peft_count

    def virtual_token_counts(self) -> tuple[int, int]:
        if self.peft_type in PROMPT_TYPES:
            return (int(self.config.peft["num_virtual_tokens"]), 0)
        return (0, 0)

    def size_label(self) -> str:
        return peft_label_parts(self.config.peft)[1]

    def resolved_config(self) -> dict[str, Any]:
        """peft's config with its defaults filled in, as adapter_config.json holds it (results.json records it)."""
        config = self.peft_model.peft_config[self.peft_model.active_adapter]
        return json.loads(json.dumps(settings_of(config.to_dict()),
                                     default=lambda v: sorted(v) if isinstance(v, (set, frozenset)) else str(v)))

    def results_record(self) -> dict:
        """results.json `extra["peft"]`: the resolved config (what tables label the run by) and peft's own count."""
        return {"peft": {"config": self.resolved_config(), "trainable_by_peft": self.peft_trainable}}

    def merge(self, model: nn.Module) -> None:
        if not self.mergeable:
            super().merge(model)
        self.peft_model.merge_adapter()

    def unmerge(self, model: nn.Module) -> None:
        if not self.mergeable:
            super().unmerge(model)
        self.peft_model.unmerge_adapter()

    # -- export (lora_ft/export.py calls these) ---------------------------------------------------------------------

    def save_adapter(self, folder: str, base_model: str | None) -> None:
        """peft's own `save_pretrained` (adapter_config.json + adapter_model.safetensors), naming `base_model`."""
        config = self.peft_model.peft_config[self.peft_model.active_adapter]
        config.base_model_name_or_path = base_model
        self.peft_model.save_pretrained(folder)

    def merged_copy(self) -> nn.Module:
        """A plain transformers model with the update folded in (`merge_and_unload` on a copy: the run's model stays)."""
        return copy.deepcopy(self.peft_model).merge_and_unload()


def load_peft_adapter(model: nn.Module, arch: Architecture, folder: str) -> PeftMethod:
    """A saved peft adapter (`save_pretrained`'s folder) put on `model` (in place, for decoding): the PeftMethod of its
    adapter_config.json, attached as training attaches it."""
    from peft import PeftConfig, PeftModel

    method = PeftMethod(PeftMethodConfig(peft=settings_of(PeftConfig.from_pretrained(folder).to_dict())))
    freeze(model)
    method.attach(PeftModel.from_pretrained(model, folder), model, arch)
    return method
