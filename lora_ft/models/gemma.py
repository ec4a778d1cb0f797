"""Gemma, Gemma 2, Gemma 3 (text): LLaMA's separate q/k/v/o and gated MLP, RMSNorm (Gemma 2/3 also after each
sublayer), the token embedding scaled by sqrt(hidden) inside the embedding module, and Gemma 2's logit soft-capping and
sliding-window layers (transformers picks eager attention for it; packing and the beam search follow that)."""

from .architecture import Architecture, WeightLocation

GEMMA = Architecture(
    name="gemma",
    model_types=("gemma", "gemma2", "gemma3_text"),
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
    # o_proj's output, before Gemma 2/3's post-attention norm and the residual add
    attention_output="self_attn.o_proj",
    mlp_output="mlp.down_proj",
    dropout_keys=("attention_dropout",),
    bias_switches={"attention_bias": False},
    examples="Gemma 2, Gemma 3",
)
