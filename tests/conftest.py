"""Shared test fixtures: tiny random models of every supported family, the shared data folder, the GPT-2 tokenizer.

Tiny models (2 blocks, hidden 32, vocab 128) are built from transformers configs with random weights: no download,
a few milliseconds each; tests reach the builders through the `tiny` fixture. The `family` and `method_name` fixtures run a
test once per family / method; parametrize them directly in a test to narrow them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pytest

if TYPE_CHECKING:
    import torch

# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine the threads' synchronisation made
# these tests 2-3x slower (measured: 34 s vs 13 s of CPU for tests/methods + test_export.py). Set before torch loads;
# torch and transformers are imported lazily so that tests which need neither (config, report) start fast.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = (REPO_ROOT / ".." / "shared").resolve()  # /work/shared when the repo is /work/main
DATA_DIR = SHARED_DIR / "data"
GPT2_TOKENIZER_DIR = DATA_DIR / "gpt2-tokenizer"

VOCAB = 128
HIDDEN = 32
LAYERS = 2
HEADS = 4

from tiny_families import FAMILIES  # noqa: E402  (Architecture.name of each supported family)


class TinyModels:
    """Builders of tiny models; tests reach them through the `tiny` fixture."""

    families = FAMILIES
    bias_free = ("llama", "phi3", "gemma", "mixtral")  # families whose tiny model has no bias vector (BitFit n/a)
    separate_kv = ("llama", "phi3", "gemma", "mixtral", "qwen2_moe")  # grouped-query attention: v is 2 heads wide
    moe = ("mixtral", "qwen2_moe")  # experts batch the tokens routed to them: float sums depend on the whole batch
    vocab = VOCAB
    hidden = HIDDEN
    layers = LAYERS
    heads = HEADS

    # The keyword arguments a tiny test uses for each method (sizes small enough for the tiny models).
    method_kwargs: dict[str, dict] = {
        "lora": {"rank": 2, "alpha": 8.0, "dropout": 0.0},
        # GELU, not the default ReLU: on a tiny random model a 3-wide ReLU bottleneck can be dead for every input.
        "adapter_h": {"bottleneck": 3, "activation": "gelu"},
        "adapter_l": {"bottleneck": 3, "activation": "gelu"},
        "prelayer": {"prefix_length": 3, "infix_length": 2},
        "preembed": {"prefix_length": 3, "infix_length": 2},
        "bitfit": {},
        "ft": {},
        "ft_top": {"top_k": 1},
    }

    @staticmethod
    def config(family: str):
        """A 2-block, hidden-32 transformers config of `family`, dropout off (tests compare outputs exactly)."""
        from transformers import GPT2Config, GPTJConfig, GPTNeoXConfig, LlamaConfig, OPTConfig

        common = {"vocab_size": VOCAB, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
        if family == "gpt2":
            return GPT2Config(
                n_layer=LAYERS, n_embd=HIDDEN, n_head=HEADS, n_positions=64,
                attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0, **common,
            )
        if family == "llama":  # grouped-query attention: k and v are narrower than q
            return LlamaConfig(
                num_hidden_layers=LAYERS, hidden_size=HIDDEN, intermediate_size=64, num_attention_heads=HEADS,
                num_key_value_heads=2, max_position_embeddings=64, **common,
            )
        if family == "opt":
            return OPTConfig(
                num_hidden_layers=LAYERS, hidden_size=HIDDEN, ffn_dim=64, num_attention_heads=HEADS,
                word_embed_proj_dim=HIDDEN, max_position_embeddings=64, dropout=0.0, attention_dropout=0.0, **common,
            )
        if family == "gpt_neox":
            return GPTNeoXConfig(
                num_hidden_layers=LAYERS, hidden_size=HIDDEN, intermediate_size=64, num_attention_heads=HEADS,
                max_position_embeddings=64, attention_bias=True, **common,
            )
        if family == "gptj":
            return GPTJConfig(
                n_layer=LAYERS, n_embd=HIDDEN, n_head=HEADS, rotary_dim=4, n_positions=64,
                attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0, **common,
            )
        from transformers import Gemma2Config, MixtralConfig, Phi3Config, Qwen2MoeConfig

        # the newer families: grouped-query attention everywhere (Phi-3's fused q|k|v then has slices of two widths)
        gqa = {"num_hidden_layers": LAYERS, "hidden_size": HIDDEN, "num_attention_heads": HEADS, "num_key_value_heads": 2,
               "max_position_embeddings": 64, **common}
        if family == "phi3":
            return Phi3Config(intermediate_size=64, **gqa)
        if family == "gemma":  # Gemma 2: soft-capping, sliding-window layers, scaled embedding
            return Gemma2Config(intermediate_size=64, head_dim=HIDDEN // HEADS, sliding_window=16, **gqa)
        if family == "mixtral":
            return MixtralConfig(intermediate_size=64, num_local_experts=4, num_experts_per_tok=2, **gqa)
        if family == "qwen2_moe":
            return Qwen2MoeConfig(intermediate_size=64, moe_intermediate_size=16, shared_expert_intermediate_size=32,
                                  num_experts=4, num_experts_per_tok=2, **gqa)
        raise ValueError(f"no tiny config for family {family!r}; known: {FAMILIES}")

    @classmethod
    def model(cls, family: str, seed: int = 0) -> torch.nn.Module:
        """A tiny random model of `family` in eval mode; the same seed gives the same weights."""
        import torch
        from transformers import AutoModelForCausalLM

        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(cls.config(family)).eval()

    @classmethod
    def adapt(cls, family: str, method_name: str, seed: int = 0, **method_kwargs):
        """(model, method, arch): a tiny model with `method_name` applied, in eval mode; the method's config from
        `method_kwargs` (default: `TinyModels.method_kwargs[method_name]`)."""
        from lora_ft.methods import method_class
        from lora_ft.models import architecture_for

        model = cls.model(family, seed)
        arch = architecture_for(model)
        method_cls = method_class(method_name)
        kwargs = method_kwargs if method_kwargs else cls.method_kwargs[method_name]
        method = method_cls(method_cls.Config(**kwargs))
        method.apply(model, arch)
        return model.eval(), method, arch

    @classmethod
    def adapt_for_training(cls, family: str, method_name: str):
        """(model, method): `adapt`, then `perturb`, in train mode; skips the test where the method cannot apply
        (e.g. BitFit on a family without biases)."""
        try:
            model, method, _ = cls.adapt(family, method_name)
        except ValueError as error:
            pytest.skip(str(error))
        cls.perturb(model)
        return model.train(), method

    @staticmethod
    def perturb(model: torch.nn.Module, seed: int = 1, std: float = 0.05) -> None:
        """Add noise to every trainable tensor: zero-initialised ones (LoRA B, adapter up) become nonzero."""
        import torch

        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)

    @staticmethod
    def ids(batch: int = 2, length: int = 7, seed: int = 0, low: int = 3) -> torch.Tensor:
        """Random real token ids (>= `low`, so the special ids 0..2 never occur)."""
        import torch

        return torch.randint(low, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine OpenMP contention made them ~50x slower
    (`pytestmark = pytest.mark.usefixtures("one_thread")` in a module that wants it)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny() -> type[TinyModels]:
    return TinyModels


@pytest.fixture(params=list(TinyModels.method_kwargs))
def method_name(request) -> str:
    return request.param


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.fail(f"the shared test data is missing: expected {DATA_DIR} (../shared/data next to the repo)")
    return DATA_DIR


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir() -> Path:
    """../shared/data/gpt2-tokenizer: the GPT-2 BPE files (tokenizer.json, vocab.json, merges.txt)."""
    if not (GPT2_TOKENIZER_DIR / "tokenizer.json").is_file():
        pytest.fail(f"the GPT-2 tokenizer is missing: expected {GPT2_TOKENIZER_DIR}/tokenizer.json")
    return GPT2_TOKENIZER_DIR


@pytest.fixture(scope="session")
def gpt2_tokenizer(gpt2_tokenizer_dir):
    """The real GPT-2 BPE tokenizer from ../shared/data/gpt2-tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gpt2_tokenizer_dir))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Callable[[str], Path]:
    """`tiny_model_dir(family)`: a directory written by save_pretrained holding the tiny model of `family` (seed 0)."""
    made: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in made:
            path = tmp_path_factory.mktemp(f"tiny-{family}")
            TinyModels.model(family).save_pretrained(str(path))
            made[family] = path
        return made[family]

    return make
