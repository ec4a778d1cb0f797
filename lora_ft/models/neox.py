"""GPT-NeoX / Pythia: `query_key_value` fuses q, k, v PER HEAD ([q_h0 k_h0 v_h0 | q_h1 k_h1 v_h1 | ...])."""

from .architecture import Architecture, WeightLocation

NEOX = Architecture(
    name="gpt_neox",
    model_types=("gpt_neox",),
    blocks="gpt_neox.layers",
    input_embedding="gpt_neox.embed_in",
    final_norm="gpt_neox.final_layer_norm",
    lm_head="lm_head",  # "embed_out" before transformers 5
    weights={
        # transformers views the output as (..., heads, 3 * head_dim) and chunks the last axis into q, k, v.
        "q": WeightLocation("attention.query_key_value", fused="per_head", part=0, parts=3),
        "k": WeightLocation("attention.query_key_value", fused="per_head", part=1, parts=3),
        "v": WeightLocation("attention.query_key_value", fused="per_head", part=2, parts=3),
        "o": WeightLocation("attention.dense"),
        "mlp_up": WeightLocation("mlp.dense_h_to_4h"),
        "mlp_down": WeightLocation("mlp.dense_4h_to_h"),
    },
    attention_output="attention.dense",
    mlp_output="mlp.dense_4h_to_h",
    dropout_keys=("attention_dropout", "hidden_dropout"),
    examples="Pythia",
)
