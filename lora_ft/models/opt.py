"""OPT: separate q/k/v projections, `out_proj`, MLP as fc1/fc2 directly in the decoder layer."""

from .architecture import Architecture, WeightLocation

OPT = Architecture(
    name="opt",
    model_types=("opt",),
    blocks="model.decoder.layers",
    input_embedding="model.decoder.embed_tokens",
    final_norm="model.decoder.final_layer_norm",
    lm_head="lm_head",
    weights={
        "q": WeightLocation("self_attn.q_proj"),
        "k": WeightLocation("self_attn.k_proj"),
        "v": WeightLocation("self_attn.v_proj"),
        "o": WeightLocation("self_attn.out_proj"),
        "mlp_up": WeightLocation("fc1"),
        "mlp_down": WeightLocation("fc2"),
    },
    attention_output="self_attn.out_proj",
    mlp_output="fc2",
    dropout_keys=("dropout", "attention_dropout"),
    bias_switches={"enable_bias": True, "layer_norm_elementwise_affine": True},
    examples="OPT",
    # transformers 5.24's OPTModel does not pass position_ids to create_causal_mask: packed examples would see each other
    packing=False,
)
