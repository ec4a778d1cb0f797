"""Where the architecture configs that ship with lora-ft live (importable without torch)."""

from pathlib import Path

SHAPES_DIR = Path(__file__).parent / "shapes"
SHIPPED_SHAPES = {
    "gpt2": "gpt2.json",
    "gpt2-medium": "gpt2-medium.json",
    "gpt2-large": "gpt2-large.json",
    "openai-community/gpt2": "gpt2.json",
    "openai-community/gpt2-medium": "gpt2-medium.json",
    "openai-community/gpt2-large": "gpt2-large.json",
}
