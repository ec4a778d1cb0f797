"""GPT-2: fused q|k|v in `attn.c_attn` (a transformers Conv1D, weight stored fan_in x fan_out), tied LM head."""

from .architecture import Architecture, WeightLocation

GPT2 = Architecture(
    name="gpt2",
    model_types=("gpt2",),
    blocks="transformer.h",
    input_embedding="transformer.wte",
    final_norm="transformer.ln_f",
    lm_head="lm_head",
    weights={
        "q": WeightLocation("attn.c_attn", fused="concat", part=0, parts=3),
        "k": WeightLocation("attn.c_attn", fused="concat", part=1, parts=3),
        "v": WeightLocation("attn.c_attn", fused="concat", part=2, parts=3),
        "o": WeightLocation("attn.c_proj"),
        "mlp_up": WeightLocation("mlp.c_fc"),
        "mlp_down": WeightLocation("mlp.c_proj"),
    },
    attention_output="attn.c_proj",
    mlp_output="mlp.c_proj",
    # The LoRA authors' GPT-2 has no dropout at all; Hugging Face's config defaults to 0.1 for each of these.
    dropout_keys=("attn_pdrop", "resid_pdrop", "embd_pdrop"),
    num_heads_key="n_head",
    hidden_size_key="n_embd",
    num_layers_key="n_layer",
    examples="GPT-2",
)
