"""The KV cache of a beam search, kept in preallocated buffers so that a decoding step copies as little as it can.

transformers' `DynamicCache` appends each new token with `torch.cat` (a copy of the whole cache, every layer, every step)
and beam search reorders it with `index_select` (a second whole copy). Here the keys and values of each layer live in a
buffer sized for the prompt and every new token: appending writes one position in place, and reordering the beams copies
only the generated positions, because the prompt positions of all beams of one prompt are the same copy of that prompt's
prefill. The attention reads views of the buffers: the same numbers in the same order, so the same outputs.

Used only for transformers caches whose layers are all plain `DynamicLayer`s (full attention); other caches (sliding
windows, quantised, tuples of tensors) are reordered as before by `select_rows`.
"""

from __future__ import annotations

from typing import Any

import torch


def expand(cache: Any, rows: torch.Tensor, capacity: int) -> Any:
    """The prefill cache with each hypothesis row `rows[i]` of it at row i, with room for `capacity` positions.

    A transformers `DynamicCache` of plain layers comes back with its layers replaced by buffered ones (`reorder` then
    copies only positions after the prompt); any other cache is reordered by `select_rows`.
    """
    if _bufferable(cache):
        for index, layer in enumerate(cache.layers):
            cache.layers[index] = _buffered_layer_class()(layer.keys, layer.values, rows, capacity)
        return cache
    return select_rows(cache, rows)


def reorder(cache: Any, rows: torch.Tensor, shared: int) -> Any:
    """The cache of the hypotheses `rows` (reordered, repeated or dropped along the batch dimension).

    `shared`: how many leading positions are equal in every row that `rows` maps onto each other (the prompt's, when
    each row continues a row of the same prompt; 0 when prompts moved): a buffered cache copies only the positions after.
    """
    layers = getattr(cache, "layers", None)
    if layers and isinstance(layers[0], _buffered_layer_class()):
        for layer in layers:
            layer.select_rows(rows, shared)
        return cache
    return select_rows(cache, rows)


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


def _bufferable(cache: Any) -> bool:
    """A transformers DynamicCache whose layers are all initialised plain DynamicLayers (no offloading)."""
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer
    except ImportError:  # an older transformers without cache layers: reorder as before
        return False
    if type(cache) is not DynamicCache or getattr(cache, "offloading", False) or not cache.layers:
        return False
    return all(type(layer) is DynamicLayer and layer.is_initialized and layer.keys is not None and layer.keys.dim() == 4
               for layer in cache.layers)


_CLASS: list[type] = []


def _buffered_layer_class() -> type:
    """`BufferedLayer`, defined on first use so that importing this module does not import transformers."""
    if _CLASS:
        return _CLASS[0]
    from transformers.cache_utils import DynamicLayer

    class BufferedLayer(DynamicLayer):
        """A full-attention layer cache whose keys and values are views of preallocated buffers
        (batch x heads x capacity x head dim); `keys`/`values` are always the filled part, as DynamicLayer's."""

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, rows: torch.Tensor, capacity: int):
            super().__init__()
            batch, heads, length, dim = keys.shape
            self.capacity = max(capacity, length)
            self.key_buffer = keys.new_empty(rows.shape[0], heads, self.capacity, dim)
            self.value_buffer = values.new_empty(rows.shape[0], values.shape[1], self.capacity, values.shape[3])
            rows = rows.to(keys.device)
            self.key_buffer[:, :, :length] = keys.index_select(0, rows)
            self.value_buffer[:, :, :length] = values.index_select(0, rows)
            self.rows, self.length = rows.shape[0], length
            self.device, self.is_initialized = keys.device, True
            self._view()

        def _view(self) -> None:
            self.keys = self.key_buffer[: self.rows, :, : self.length]
            self.values = self.value_buffer[: self.rows, :, : self.length]

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            new = key_states.shape[-2]
            if key_states.shape[0] != self.rows:
                raise RuntimeError(f"cache holds {self.rows} rows, the step brings {key_states.shape[0]}")
            if self.length + new > self.capacity:  # not reached by beam_search (sized for every step); grow anyway
                self._grow(self.length + new)
            self.key_buffer[: self.rows, :, self.length : self.length + new] = key_states
            self.value_buffer[: self.rows, :, self.length : self.length + new] = value_states
            self.length += new
            self._view()
            return self.keys, self.values

        def _grow(self, needed: int) -> None:
            self.capacity = max(needed, 2 * self.capacity)
            for name in ("key_buffer", "value_buffer"):
                old = getattr(self, name)
                new = old.new_empty(old.shape[0], old.shape[1], self.capacity, old.shape[3])
                new[:, :, : self.length] = old[:, :, : self.length]
                setattr(self, name, new)

        def select_rows(self, rows: torch.Tensor, shared: int) -> None:
            """Row i becomes the current row rows[i]; positions before `shared` are equal in both, so not copied."""
            rows = rows.to(self.device)
            count = rows.shape[0]
            if shared < self.length:
                for buffer in (self.key_buffer, self.value_buffer):
                    part = buffer[: self.rows, :, shared : self.length].index_select(0, rows)  # a copy: rows may overlap
                    buffer[:count, :, shared : self.length] = part
            self.rows = count
            self._view()

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            self.select_rows(beam_idx, 0)

    _CLASS.append(BufferedLayer)
    return BufferedLayer
