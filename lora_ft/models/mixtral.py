"""Mixtral (sparse mixture of experts): LLaMA's separate q/k/v/o; the experts' MLP weights are 3-D tensors inside
`mlp.experts` (transformers 5), not linear layers, so LoRA targets the attention weights here; an adapter sits on the
whole MoE block's output. No bias vectors."""

from .architecture import Architecture, WeightLocation

MIXTRAL = Architecture(
    name="mixtral",
    model_types=("mixtral",),
    blocks="model.layers",
    input_embedding="model.embed_tokens",
    final_norm="model.norm",
    lm_head="lm_head",
    weights={
        "q": WeightLocation("self_attn.q_proj"),
        "k": WeightLocation("self_attn.k_proj"),
        "v": WeightLocation("self_attn.v_proj"),
        "o": WeightLocation("self_attn.o_proj"),
    },
    attention_output="self_attn.o_proj",
    mlp_output="mlp",  # the sparse MoE block: router, experts and their weighted sum
    dropout_keys=("attention_dropout",),
    bias_switches={"attention_bias": False},  # no switch exists: Mixtral has no bias vectors
    examples="Mixtral",
)
