"""lora-ft: reproduce the LoRA paper (Hu et al. 2021) experiments on the Hugging Face stack."""

__version__ = "0.1.0"
