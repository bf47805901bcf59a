"""KV cache in preallocated batch slots, for the continuous-batching engine.

Transformers' ``DynamicCache`` keeps each layer's keys and values as one tensor and grows it
with ``torch.cat`` at every decode step, so every step copies the whole cache. A continuous
batch adds more copies: each arrival pads and concatenates the running batch's cache, and each
departure ``index_select``\\ s it. When requests arrive one at a time, as they do from
independent clients, those copies cost as much as the forward passes themselves (measured on
the tiny model at 16 closed-loop clients with staggered starts: 0.88 s of merges and removals
against 5.9 s of decode passes, and decode passes 20 % slower from the per-step copy of a cache
kept at the longest row's width).

Here each layer's keys and values live in storage of rows (batch slots, at most ``slots``) by
columns, both grown by doubling, shrunk to twice the need when a quarter or less of either is
used, and released when the batch empties: an idle engine holds no KV memory, and a busy one at
most about four times what its rows need (the margin keeps a batch near a boundary from resizing
back and forth). The running batch is rows ``[0, rows)``; the live columns
are ``[start, end)``; the attention reads a view of that block, never a copy. All rows are
right-aligned: a decode step writes every row's new token at column ``end``, and a newcomer's
prompt is written at ``[end - n, end)`` of a free slot, its earlier columns masked and zeroed (a
slot's previous keys could be non-finite, and a masked NaN still poisons the attention). The same
layout, and so the same masked-column arithmetic, as the left-padded cache it replaces: masked
columns get zero attention weight, so a prompt decodes as it does alone.

* admit: copy the newcomers' prefill keys and values (``n`` columns each) into free slots;
  only when a prompt is longer than the live width is the running block shifted right once.
* remove: a finished row's slot takes the last row's keys, values and mask (one row copied),
  so the running rows stay ``[0, rows)``; the caller's list of sequences is permuted alike.
* trim: leading columns that no row attends any more are dropped by moving ``start``.
* capacity: when ``end`` reaches the storage, the live block moves to column 0 if it fills at
  most half the storage, else the columns double; either copies the block once, which the
  doubling amortises to O(1) per step. Rows double (up to ``slots``) when newcomers need them.

Only plain attention layers (``DynamicLayer``) are held this way; a model whose cache has
sliding-window or linear-attention layers keeps the concatenating path (see ``supported``).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

MIN_CAPACITY = 64  # columns allocated at least, and the rounding of growth


def supported(cache) -> bool:
    """True when every layer of a prefill's cache is a plain, filled ``DynamicLayer`` (no sliding window, no
    state, no layer that shares another's keys and so holds none of its own)."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer and layer.keys is not None for layer in layers)


class _Span:
    """Where the running batch lives in the storage, shared by every layer of one cache."""

    def __init__(self) -> None:
        self.rows = 0  # running rows: slots [0, rows)
        self.start = 0  # first live column
        self.end = 0  # one past the last written column
        self.pending = 0  # columns the forward pass in progress writes at [end, end + pending)


class SlotLayer(DynamicLayer):
    """One layer's keys and values in slot storage; ``keys``/``values`` are views of the live block."""

    def __init__(self, span: _Span, rows: int, heads: int, capacity: int, head_dim: int, dtype, device):
        super().__init__()
        self.span = span
        self.store_k = torch.zeros((rows, heads, capacity, head_dim), dtype=dtype, device=device)
        self.store_v = torch.zeros_like(self.store_k)
        self.device = device
        self.is_initialized = True
        self.refresh()

    def refresh(self) -> None:
        """Point ``keys``/``values`` at the live block."""
        s = self.span
        self.keys = self.store_k[: s.rows, :, s.start : s.end]
        self.values = self.store_v[: s.rows, :, s.start : s.end]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Write this pass's keys and values at ``[end, end + pending)``; return the live block including them."""
        s = self.span
        q = key_states.shape[-2]
        if q != s.pending or key_states.shape[0] != s.rows:
            raise RuntimeError(
                f"slot cache: a forward pass of {key_states.shape[0]} rows x {q} tokens, "
                f"but the engine prepared {s.rows} x {s.pending}"
            )
        self.store_k[: s.rows, :, s.end : s.end + q] = key_states
        self.store_v[: s.rows, :, s.end : s.end + q] = value_states
        self.keys = self.store_k[: s.rows, :, s.start : s.end + q]  # as DynamicLayer.update leaves them
        self.values = self.store_v[: s.rows, :, s.start : s.end + q]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        """Live columns before this pass's tokens (what the model offsets ``cache_position`` by)."""
        return self.span.end - self.span.start

    @property
    def capacity(self) -> int:
        return self.store_k.shape[2]

    def _not_here(self, *args, **kwargs):
        raise NotImplementedError(
            "slot cache: rows and columns are managed by SlotKVCache (admit/remove/trim), not by the layer"
        )

    # DynamicLayer's own reshaping would point keys/values away from the storage the engine writes
    crop = batch_repeat_interleave = batch_select_indices = reorder_cache = offload = prefetch = reset = _not_here


class SlotKVCache:
    """The engine's running batch: slot storage for every layer plus the attention mask.

    Args:
        slots: most rows at once (the engine's ``max_batch_size``).
        min_capacity: columns allocated at least, and the rounding of growth (default ``MIN_CAPACITY``).
    """

    def __init__(self, slots: int, min_capacity: int | None = None):
        min_capacity = MIN_CAPACITY if min_capacity is None else min_capacity
        if slots < 1 or min_capacity < 1:
            raise ValueError(f"slots and min_capacity must be >= 1, got {slots}, {min_capacity}")
        self.slots = slots
        self.min_capacity = min_capacity
        self.span = _Span()
        self.cache: DynamicCache | None = None  # what the model's forward receives
        self.mask: torch.Tensor | None = None  # (row capacity, column capacity), 1 where a row attends a column

    # ---- views -----------------------------------------------------------------------------

    @property
    def rows(self) -> int:
        return self.span.rows

    @property
    def width(self) -> int:
        """Live columns."""
        return self.span.end - self.span.start

    @property
    def layers(self) -> list[SlotLayer]:
        return self.cache.layers if self.cache is not None else []

    def live_mask(self) -> torch.Tensor:
        """The running rows' mask over the live columns (a view)."""
        s = self.span
        if self.mask is None:
            return torch.zeros((0, 0), dtype=torch.long)
        return self.mask[: s.rows, s.start : s.end]

    # ---- the running batch -----------------------------------------------------------------

    def admit(self, new_cache, new_mask: torch.Tensor) -> None:
        """Add the rows of a prefill (its cache and its left-padded mask) as the last running rows.

        Raises:
            ValueError: more rows than free slots.
        """
        k, n = new_mask.shape
        s = self.span
        if s.rows + k > self.slots:
            raise ValueError(f"slot cache: {s.rows} running + {k} new rows exceed {self.slots} slots")
        if self.cache is None:
            self._allocate(new_cache.layers, k, _round_up(2 * n, self.min_capacity))
        elif s.rows + k > self.row_capacity:
            self._reallocate(min(self.slots, max(2 * self.row_capacity, s.rows + k)), self.mask.shape[1])
        if s.rows == 0:
            s.start = s.end = 0
        if s.end < n:  # a prompt longer than the live width: the running block moves right once
            self._make_room(n)
            if s.end < n:
                self._shift_right(n - s.end)
        lo, hi = s.end - n, s.end
        start = min(s.start, lo) if s.rows else lo
        for layer, new in zip(self.layers, new_cache.layers):
            for store, block in ((layer.store_k, new.keys), (layer.store_v, new.values)):
                store[s.rows : s.rows + k, :, start:lo] = 0  # masked, and zero: a previous occupant's could be NaN
                if lo < s.start:  # columns that become live for the running rows: masked, zero them too
                    store[: s.rows, :, lo : s.start] = 0
                store[s.rows : s.rows + k, :, lo:hi] = block
        self.mask[s.rows : s.rows + k] = 0
        self.mask[s.rows : s.rows + k, lo:hi] = new_mask
        s.rows += k
        s.start = min(s.start, lo)
        self._refresh()

    def remove(self, finished: list[bool], items: list) -> list:
        """Drop the rows flagged in ``finished``; returns ``items`` (one per row) in the new row order."""
        s = self.span
        if len(finished) != s.rows or len(items) != s.rows:
            raise ValueError(f"slot cache: {len(finished)} flags and {len(items)} items for {s.rows} rows")
        if not any(finished):
            return list(items)  # no row left: no leading column freed, nothing to trim
        items = list(items)
        for i in range(s.rows - 1, -1, -1):
            if not finished[i]:
                continue
            last = s.rows - 1
            if i != last:  # the last row takes the freed slot: one row copied, not the batch
                for layer in self.layers:
                    layer.store_k[i, :, s.start : s.end] = layer.store_k[last, :, s.start : s.end]
                    layer.store_v[i, :, s.start : s.end] = layer.store_v[last, :, s.start : s.end]
                self.mask[i] = self.mask[last]
                items[i] = items[last]
            items.pop()
            s.rows -= 1
        self.trim()
        return items

    def trim(self) -> None:
        """Move ``start`` past leading columns that no running row attends; shrink storage used a quarter or less."""
        s = self.span
        if s.rows == 0:
            self.reset()
            return
        if s.end > s.start:
            used = self.live_mask().any(dim=0).nonzero()
            if used.numel():
                s.start += int(used[0])
        rows, columns = self.mask.shape
        need = _round_up(2 * self.width, self.min_capacity)
        new_rows = rows if 4 * s.rows > rows else 2 * s.rows
        new_columns = columns if columns <= 4 * need else need
        if (new_rows, new_columns) != (rows, columns):
            self._reallocate(new_rows, new_columns)
        else:
            self._refresh()

    def begin_step(self, tokens: int = 1) -> torch.Tensor:
        """Prepare a forward pass that appends ``tokens`` columns to every running row; returns its mask."""
        s = self.span
        self._make_room(tokens)
        self.mask[: s.rows, s.end : s.end + tokens] = 1
        s.pending = tokens
        return self.mask[: s.rows, s.start : s.end + tokens]

    def end_step(self) -> None:
        """The forward pass wrote its columns: make them live."""
        s = self.span
        s.end += s.pending
        s.pending = 0
        self._refresh()

    def reset(self) -> None:
        """Forget the running batch and release its storage (an idle engine holds no KV memory)."""
        s = self.span
        s.rows = s.start = s.end = s.pending = 0
        self.cache = self.mask = None

    # ---- storage ---------------------------------------------------------------------------

    @property
    def row_capacity(self) -> int:
        return self.mask.shape[0] if self.mask is not None else 0

    @property
    def column_capacity(self) -> int:
        return self.mask.shape[1] if self.mask is not None else 0

    def _allocate(self, layers, rows: int, capacity: int) -> None:
        """Storage for every layer, each shaped, typed and placed as that layer's prefill keys."""
        capacity = max(capacity, self.min_capacity)
        cache = DynamicCache()
        cache.layers = []
        for layer in layers:
            _, heads, _, head_dim = layer.keys.shape
            cache.layers.append(
                SlotLayer(self.span, rows, heads, capacity, head_dim, layer.keys.dtype, layer.keys.device)
            )
        self.cache = cache
        self.mask = torch.zeros((rows, capacity), dtype=torch.long, device=layers[0].keys.device)

    def _reallocate(self, rows: int, capacity: int) -> None:
        """New storage of ``rows`` x ``capacity``, with the live block copied to column 0."""
        s = self.span
        width = s.end - s.start
        for layer in self.layers:
            layer.store_k = _moved(layer.store_k, s.rows, s.start, s.end, rows, capacity)
            layer.store_v = _moved(layer.store_v, s.rows, s.start, s.end, rows, capacity)
        self.mask = _moved(self.mask, s.rows, s.start, s.end, rows, capacity)
        s.start, s.end = 0, width
        self._refresh()

    def _make_room(self, columns: int) -> None:
        """Ensure ``columns`` free columns after ``end``: move the live block to 0, or double the storage."""
        s = self.span
        capacity = self.mask.shape[1]
        if s.end + columns <= capacity:
            return
        width = s.end - s.start
        if width + columns <= capacity // 2:
            new_capacity = capacity
        else:
            new_capacity = max(2 * capacity, _round_up(width + columns, self.min_capacity))
        self._reallocate(self.row_capacity, new_capacity)

    def _shift_right(self, d: int) -> None:
        """Move the running block ``d`` columns right (room already made); the columns it leaves are masked."""
        s = self.span
        if s.rows:
            for layer in self.layers:
                for name in ("store_k", "store_v"):
                    store = getattr(layer, name)
                    store[: s.rows, :, s.start + d : s.end + d] = store[: s.rows, :, s.start : s.end].clone()
            block = self.mask[: s.rows, s.start : s.end].clone()
            self.mask[: s.rows, s.start : s.end + d] = 0
            self.mask[: s.rows, s.start + d : s.end + d] = block
        s.start += d
        s.end += d

    def _refresh(self) -> None:
        for layer in self.layers:
            layer.refresh()


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


def _moved(store: torch.Tensor, rows: int, start: int, end: int, row_capacity: int, capacity: int) -> torch.Tensor:
    """``store``'s running rows' columns ``[start, end)`` at column 0 of storage ``row_capacity`` x ``capacity``.

    ``store`` is (rows, heads, columns, dim) for keys and values, (rows, columns) for the mask; same-size
    storage is reused (the block moves left in place), otherwise new storage is allocated.
    """
    col = 2 if store.dim() == 4 else 1
    width = end - start
    block = store.narrow(0, 0, rows).narrow(col, start, width)
    if store.shape[0] == row_capacity and store.shape[col] == capacity:
        store.narrow(0, 0, rows).narrow(col, 0, width).copy_(block.clone())
        return store
    shape = list(store.shape)
    shape[0], shape[col] = row_capacity, capacity
    out = store.new_zeros(shape)
    out.narrow(0, 0, rows).narrow(col, 0, width).copy_(block)
    return out
