"""The KV cache of a beam search, with each prompt's keys and values kept once and shared by its beams.

After the prompt pass every beam of a prompt attends to the same prompt positions. transformers' `generate` runs the
prompt once per beam and keeps a copy of its keys and values per beam; its `DynamicCache` appends each new token with
`torch.cat` and reorders the beams with `index_select`, so every step copies the whole cache, and every step's attention
reads the prompt's keys and values once per beam. Here each full-attention layer keeps
- the prompt's keys and values once per prompt (prompts x heads x prompt length x dim), never copied when beams move;
- the generated tokens' keys and values per hypothesis, in a buffer with room for every step: a step writes one
  position, a reorder copies only the generated positions.
A decoding step attends over both parts with `prompt_shared_attention` ("cascade" attention), registered as a
transformers attention function and used only for the decoding steps (`forward`): each prompt's keys are multiplied by
the queries of all its beams at once, each hypothesis's generated keys by its own query, and one softmax runs over both
parts in sequence order. The same mathematics as attention over the concatenated cache; float rounding may differ in
the last bits (tests/test_beam_cache.py compares both, tests/test_generate.py the outputs with the authors' loop).

Used when the model sends attention through transformers' AttentionInterface (`_supports_attention_backend`, every
family lora-ft supports) and its cache is a `DynamicCache` of plain full-attention layers; anything else (sliding
windows, quantised or offloaded caches, tuples of tensors) is reordered by `select_rows`, as transformers does.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

ATTENTION_NAME = "lora_ft_prompt_shared"  # the name registered with transformers' AttentionInterface
_CACHE_KEYWORD = "prompt_shared_cache"  # the forward keyword that carries the cache to `prompt_shared_attention`


def expand(model: Any, cache: Any, rows: torch.Tensor, *, prompts: torch.Tensor, beams: int, new_tokens: int,
           prompt_mask: torch.Tensor, slots: torch.Tensor | None = None) -> Any:
    """The prompt pass's cache, made the cache of the hypotheses: hypothesis i continues prompt row `rows[i]`.

    `prompts`: the prompt rows that go on, in order; each has `beams` slots (prompt-major), and `slots` says which
    slot each hypothesis fills (None: every slot, in order). `new_tokens`: room for generated positions; `prompt_mask`
    (prompt rows x prompt length, 1 = a real token) marks the left padding. A shareable cache (see the module's
    docstring) comes back with its layers replaced by prompt-shared ones; any other is reordered.
    """
    if _shareable(model, cache):
        from transformers.modeling_utils import AttentionInterface

        if ATTENTION_NAME not in AttentionInterface._global_mapping:
            AttentionInterface.register(ATTENTION_NAME, prompt_shared_attention)
        mask = prompt_mask.index_select(0, prompts.to(prompt_mask.device)).bool()
        layer_class = _prompt_shared_layer_class()
        for index, layer in enumerate(cache.layers):
            cache.layers[index] = layer_class(layer.keys, layer.values, prompts, mask, beams, new_tokens)
        return reorder(cache, rows, prompts=None, slots=slots)  # nothing generated yet: only the slots are set
    return select_rows(cache, rows)


def reorder(cache: Any, rows: torch.Tensor, *, prompts: torch.Tensor | None, slots: torch.Tensor | None) -> Any:
    """The cache of the hypotheses `rows` (reordered, repeated or dropped along the batch dimension).

    Each hypothesis continues one of its own prompt's. `prompts`: the positions of the prompts that stay in the batch
    (None: all stay), `slots`: the slot of each hypothesis (None: every slot, in order).
    """
    layers = getattr(cache, "layers", None)
    if layers and isinstance(layers[0], _prompt_shared_layer_class()):
        for layer in layers:
            layer.select_rows(rows, prompts, slots)
        return cache
    return select_rows(cache, rows)


def forward(model: Any, kv_cache: Any, /, **inputs: Any) -> Any:
    """A decoding step: `model(**inputs)`, attending with `prompt_shared_attention` if `kv_cache` is prompt-shared."""
    layers = getattr(kv_cache, "layers", None)
    if not (layers and isinstance(layers[0], _prompt_shared_layer_class())):
        return model(**inputs)
    with _attention_implementation(model, ATTENTION_NAME):
        return model(**inputs, **{_CACHE_KEYWORD: kv_cache})


def select_rows(cache: Any, rows: torch.Tensor) -> Any:
    """The cache of the hypotheses `rows`, for any cache: a transformers Cache or nested tuples of tensors."""
    if hasattr(cache, "reorder_cache"):  # transformers Cache (DynamicCache, ...): in place, any number of rows
        cache.reorder_cache(rows)
        return cache
    if isinstance(cache, torch.Tensor):
        return cache.index_select(0, rows.to(cache.device))
    if isinstance(cache, (tuple, list)):
        return type(cache)(select_rows(part, rows) for part in cache)
    raise TypeError(
        f"cannot reorder a KV cache of type {type(cache).__name__}; beam_search supports transformers Cache objects and "
        "nested tuples of tensors with the batch first"
    )


def prompt_shared_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: Any, scaling: float | None = None, dropout: float = 0.0,
                            **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention of one new token per hypothesis over its prompt's shared keys/values and its own generated ones.

    A transformers attention function (AttentionInterface): `query` is (hypotheses, heads, 1, dim); `key`/`value` are
    the generated part (hypotheses, kv heads, generated, dim) that the cache's `update` returned; the prompt part and
    its padding come from the cache passed as `prompt_shared_cache`. `attention_mask` is not used: the prompt's padding
    is the only masked position (a new token sees every earlier one). Returns (hypotheses, 1, heads, dim) as sdpa's.
    """
    cache = kwargs.get(_CACHE_KEYWORD)
    if cache is None:
        raise RuntimeError(
            f"{type(module).__name__} called the prompt-shared attention without the prompt-shared cache; its model "
            "does not pass forward keywords on to attention. Decode with transformers' own cache (an unsupported model)"
        )
    unsupported = [name for name in ("softcap", "sliding_window", "s_aux", "head_mask", "position_bias")
                   if kwargs.get(name) is not None]
    if unsupported or dropout:
        raise NotImplementedError(f"prompt-shared attention does not implement {unsupported or ['dropout']}")
    layer = cache.layers[module.layer_idx]
    rows, heads, q_length, dim = query.shape
    kv_heads, beams, prompts = key.shape[1], layer.beams, layer.prompt_keys.shape[0]
    if q_length != 1 or rows != layer.rows:
        raise RuntimeError(f"prompt-shared attention takes one new token for each of {layer.rows} hypotheses, got "
                           f"{rows} x {q_length}")
    groups, slots = heads // kv_heads, layer.slots  # query heads per key head (grouped-query attention)
    scale = scaling if scaling is not None else dim ** -0.5
    # Prompt part, by slot (beams per prompt; a slot without a hypothesis gets a zero query, its result is dropped):
    # the query rows of one prompt and key head (beams x groups) meet the prompt's keys in one product.
    # Scores in float32 whatever the model's dtype (as eager attention's softmax), the products in the cache's dtype.
    by_slot = query if slots is None else query.new_zeros(prompts * beams, heads, 1, dim).index_copy_(0, slots, query)
    by_prompt = by_slot.view(prompts, beams, kv_heads, groups, dim).transpose(1, 2).reshape(prompts, kv_heads, -1, dim)
    prompt_scores = torch.matmul(by_prompt, layer.prompt_keys.transpose(2, 3)).float() * scale
    prompt_scores = prompt_scores + layer.prompt_bias  # -inf at the prompt's left padding
    prompt_length = prompt_scores.shape[-1]
    prompt_scores = prompt_scores.view(prompts, kv_heads, beams, groups, -1).transpose(1, 2)
    prompt_scores = prompt_scores.reshape(prompts * beams, kv_heads, groups, prompt_length)
    if slots is not None:
        prompt_scores = prompt_scores.index_select(0, slots)
    generated_scores = torch.matmul(query.view(rows, kv_heads, groups, dim), key.transpose(2, 3)).float() * scale
    scores = torch.cat([prompt_scores, generated_scores], dim=-1)
    weights = torch.softmax(scores, dim=-1).to(value.dtype)  # prompt positions first, as in the concatenated cache
    prompt_weights = weights[..., :prompt_length]
    if slots is not None:
        prompt_weights = prompt_weights.new_zeros(prompts * beams, kv_heads, groups, prompt_length).index_copy_(
            0, slots, prompt_weights)
    prompt_weights = prompt_weights.reshape(prompts, beams, kv_heads, groups, prompt_length)
    prompt_weights = prompt_weights.transpose(1, 2).reshape(prompts, kv_heads, beams * groups, prompt_length)
    output = torch.matmul(prompt_weights, layer.prompt_values)  # prompts x kv heads x (beams x groups) x dim
    output = output.view(prompts, kv_heads, beams, groups, dim).transpose(1, 2).reshape(-1, kv_heads, groups, dim)
    if slots is not None:
        output = output.index_select(0, slots)
    output = output + torch.matmul(weights[..., prompt_length:], value)
    return output.reshape(rows, 1, heads, dim), None


def _shareable(model: Any, cache: Any) -> bool:
    """A model attending through transformers' AttentionInterface, with a DynamicCache of plain full-attention layers."""
    try:
        from transformers import modeling_utils
        from transformers.cache_utils import DynamicCache, DynamicLayer
    except ImportError:  # a transformers without cache layers: reorder as before
        return False
    if not hasattr(modeling_utils, "AttentionInterface"):  # nowhere for `expand` to register the attention
        return False
    if not getattr(model, "_supports_attention_backend", False) or _config(model) is None:
        return False
    if type(cache) is not DynamicCache or getattr(cache, "offloading", False) or not cache.layers:
        return False
    return all(type(layer) is DynamicLayer and layer.is_initialized and layer.keys is not None and layer.keys.dim() == 4
               for layer in cache.layers)


def _config(model: Any) -> Any:
    config = getattr(model, "config", None)
    return config if config is not None and hasattr(config, "_attn_implementation") else None


@contextlib.contextmanager
def _attention_implementation(model: Any, name: str) -> Iterator[None]:
    """The model attends with `name` inside the block (attention modules read the config at every forward)."""
    config = _config(model)
    previous = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = previous


_CLASS: list[type] = []


def _prompt_shared_layer_class() -> type:
    """`PromptSharedLayer`, defined on first use so that importing this module does not import transformers."""
    if _CLASS:
        return _CLASS[0]
    from transformers.cache_utils import DynamicLayer

    class PromptSharedLayer(DynamicLayer):
        """One layer's cache: the prompt part once per prompt, the generated part per hypothesis in a buffer.

        `keys`/`values` (what DynamicLayer's users read) are the generated part; the sequence length the model sees
        (`get_seq_length`) counts both parts.
        """

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, prompts: torch.Tensor, mask: torch.Tensor,
                     beams: int, capacity: int):
            super().__init__()
            prompts = prompts.to(keys.device)
            self.prompt_keys, self.prompt_values = keys.index_select(0, prompts), values.index_select(0, prompts)
            # Additive float32 bias over the prompt positions: 0 for tokens, -inf for left padding.
            bias = torch.zeros(mask.shape, dtype=torch.float32, device=keys.device)
            self.prompt_bias = bias.masked_fill_(~mask.to(keys.device), float("-inf"))[:, None, None, :]
            self.beams, self.rows, self.length, self.capacity = beams, prompts.shape[0] * beams, 0, capacity
            self.slots: torch.Tensor | None = None  # the slot of each hypothesis (None: every slot, in order)
            # Two buffers each for keys and values: a reorder copies the current one's generated positions into the
            # other in one pass (index_select into a view: no temporary to allocate, and so no fresh memory to
            # page in, at every step of every layer).
            self.buffers = [tuple(part.new_empty(self.rows, part.shape[1], capacity, part.shape[3])
                                  for part in (keys, values)) for _ in range(2)]
            self.device, self.is_initialized = keys.device, True
            self._view()

        def _view(self) -> None:
            key_buffer, value_buffer = self.buffers[0]
            self.keys = key_buffer[: self.rows, :, : self.length]
            self.values = value_buffer[: self.rows, :, : self.length]

        def get_seq_length(self) -> int:
            return self.prompt_keys.shape[2] + self.length

        def get_mask_sizes(self, query_length: int, *args: Any, **kwargs: Any) -> tuple[int, int]:
            return self.get_seq_length() + query_length, 0

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
            new = key_states.shape[-2]
            if key_states.shape[0] != self.rows:
                raise RuntimeError(f"cache holds {self.rows} hypotheses, the step brings {key_states.shape[0]}")
            if self.length + new > self.capacity:  # not reached by beam_search (sized for every step); grow anyway
                self._grow(self.length + new)
            key_buffer, value_buffer = self.buffers[0]
            key_buffer[: self.rows, :, self.length : self.length + new] = key_states
            value_buffer[: self.rows, :, self.length : self.length + new] = value_states
            self.length += new
            self._view()
            return self.keys, self.values

        def _grow(self, needed: int) -> None:
            self.capacity = max(needed, 2 * self.capacity)
            grown = []
            for pair in self.buffers:
                grown.append(tuple(old.new_empty(old.shape[0], old.shape[1], self.capacity, old.shape[3]) for old in pair))
                for old, new in zip(pair, grown[-1]):
                    new[:, :, : self.length] = old[:, :, : self.length]
            self.buffers = grown

        def select_rows(self, rows: torch.Tensor, prompts: torch.Tensor | None, slots: torch.Tensor | None) -> None:
            """Hypothesis i continues the current hypothesis rows[i] and fills slot slots[i] (None: every slot, in
            order); `prompts`: the prompts kept (None: all). Only generated positions are copied (none at first)."""
            rows = rows.to(self.device)
            if prompts is not None:
                prompts = prompts.to(self.device)
                self.prompt_keys = self.prompt_keys.index_select(0, prompts)
                self.prompt_values = self.prompt_values.index_select(0, prompts)
                self.prompt_bias = self.prompt_bias.index_select(0, prompts)
            if self.length:
                current, other = self.buffers
                for source, target in zip(current, other):
                    torch.index_select(source[: self.rows, :, : self.length], 0, rows,
                                       out=target[: rows.shape[0], :, : self.length])
                self.buffers = [other, current]
            self.rows, self.slots = rows.shape[0], None if slots is None else slots.to(self.device)
            self._view()

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            raise NotImplementedError("a prompt-shared cache is reordered by lora_ft.beam_cache.reorder")

    _CLASS.append(PromptSharedLayer)
    return PromptSharedLayer
