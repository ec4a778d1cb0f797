"""Phi-3 / Phi-4 (model_type phi3): q, k and v fused in `qkv_proj` ([q | k | v], k and v narrower than q under
grouped-query attention), the MLP's gate and up fused in `gate_up_proj` ([gate | up]), RMSNorm, no biases."""

from .architecture import Architecture, WeightLocation

PHI3 = Architecture(
    name="phi3",
    model_types=("phi3",),
    blocks="model.layers",
    input_embedding="model.embed_tokens",
    final_norm="model.norm",
    lm_head="lm_head",
    weights={
        "q": WeightLocation("self_attn.qkv_proj", fused="qkv", part=0, parts=3),
        "k": WeightLocation("self_attn.qkv_proj", fused="qkv", part=1, parts=3),
        "v": WeightLocation("self_attn.qkv_proj", fused="qkv", part=2, parts=3),
        "o": WeightLocation("self_attn.o_proj"),
        # Phi3MLP: gate, up = gate_up_proj(x).chunk(2, dim=-1)
        "mlp_gate": WeightLocation("mlp.gate_up_proj", fused="concat", part=0, parts=2),
        "mlp_up": WeightLocation("mlp.gate_up_proj", fused="concat", part=1, parts=2),
        "mlp_down": WeightLocation("mlp.down_proj"),
    },
    attention_output="self_attn.o_proj",
    mlp_output="mlp.down_proj",
    dropout_keys=("attention_dropout", "resid_pdrop", "embd_pdrop"),
    bias_switches={"attention_bias": False},  # no switch exists: Phi-3 has no bias vectors at all
    examples="Phi-3, Phi-3.5, Phi-4",
)
