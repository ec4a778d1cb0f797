"""LLaMA family (Llama, Qwen2/3, Mistral, SmolLM): separate q/k/v/o projections, gated MLP, RMSNorm, no biases."""

from .architecture import Architecture, WeightLocation

LLAMA = Architecture(
    name="llama",
    model_types=("llama", "qwen2", "qwen3", "mistral", "smollm3"),
    blocks="model.layers",
    input_embedding="model.embed_tokens",
    final_norm="model.norm",
    lm_head="lm_head",
    weights={
        "q": WeightLocation("self_attn.q_proj"),
        "k": WeightLocation("self_attn.k_proj"),
        "v": WeightLocation("self_attn.v_proj"),
        "o": WeightLocation("self_attn.o_proj"),
        "mlp_up": WeightLocation("mlp.up_proj"),
        "mlp_gate": WeightLocation("mlp.gate_proj"),
        "mlp_down": WeightLocation("mlp.down_proj"),
    },
    attention_output="self_attn.o_proj",
    mlp_output="mlp.down_proj",
    dropout_keys=("attention_dropout",),
    # RMSNorm has no bias; q/k/v/o and the MLP have one only when switched on (Qwen2 always biases q, k, v).
    bias_switches={"attention_bias": False, "mlp_bias": False},
    biased_model_types=("qwen2",),
    examples="SmolLM2, Llama, Mistral",
)
