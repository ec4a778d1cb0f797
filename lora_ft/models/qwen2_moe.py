"""Qwen2-MoE (Qwen1.5-MoE, Qwen2-57B-A14B): Qwen2's attention (separate q/k/v/o, biases on q, k, v by default: qkv_bias); the MLP is a sparse
MoE block whose experts' weights are 3-D tensors (transformers 5) beside one shared expert, so LoRA targets the
attention weights here; an adapter sits on the whole MoE block's output."""

from .architecture import Architecture, WeightLocation

QWEN2_MOE = Architecture(
    name="qwen2_moe",
    model_types=("qwen2_moe",),
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
    mlp_output="mlp",  # router, experts, shared expert and its gate
    dropout_keys=("attention_dropout",),
    bias_switches={"qkv_bias": True},  # q, k and v carry biases unless the config turns them off
    examples="Qwen1.5-MoE, Qwen2-57B-A14B",
)
