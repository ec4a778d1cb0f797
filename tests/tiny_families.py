"""The model families every tiny-model test runs on (each an `Architecture.name`): importable by test modules for
`parametrize` (tests/conftest.py builds their tiny models; a module cannot import conftest, which pytest loads by path)."""

FAMILIES = ("gpt2", "llama", "opt", "gpt_neox", "gptj", "phi3", "gemma", "mixtral", "qwen2_moe")
