"""GPT-J: separate q/k/v projections without bias, attention and MLP in parallel inside a block."""

from .architecture import Architecture, WeightLocation

GPTJ = Architecture(
    name="gptj",
    model_types=("gptj",),
    blocks="transformer.h",
    input_embedding="transformer.wte",
    final_norm="transformer.ln_f",
    lm_head="lm_head",
    weights={
        "q": WeightLocation("attn.q_proj"),
        "k": WeightLocation("attn.k_proj"),
        "v": WeightLocation("attn.v_proj"),
        "o": WeightLocation("attn.out_proj"),
        "mlp_up": WeightLocation("mlp.fc_in"),
        "mlp_down": WeightLocation("mlp.fc_out"),
    },
    attention_output="attn.out_proj",
    mlp_output="mlp.fc_out",
    dropout_keys=("attn_pdrop", "resid_pdrop", "embd_pdrop"),
    num_heads_key="n_head",
    hidden_size_key="n_embd",
    num_layers_key="n_layer",
    examples="GPT-J",
)
