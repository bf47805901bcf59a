"""The slot KV cache keeps every running row's keys and values, in order, through admits, removals and growth.

Keys here are labels, not model states: a row's token ``j`` is stored as ``row_id * 1000 + j``, so reading
a row's attended columns back must give its own labels in the order they were written, whatever was
admitted, removed, compacted or grown in between. The model-level check (greedy output equal to
unbatched output) is in test_runtime_engine.py.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.cache_utils import DynamicCache, DynamicLayer

from serving.runtime.kv_slots import SlotKVCache, supported

LAYERS, HEADS, DIM = 2, 1, 1


def _prefill(rows: list[tuple[int, int]]):
    """A left-padded prefill cache for rows given as (row id, prompt length)."""
    width = max(n for _, n in rows)
    keys = torch.zeros((len(rows), HEADS, width, DIM))
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (rid, n) in enumerate(rows):
        keys[i, 0, width - n :, 0] = torch.arange(n, dtype=torch.float32) + rid * 1000
        mask[i, width - n :] = 1
    cache = DynamicCache()
    cache.layers = []
    for layer_idx in range(LAYERS):
        layer = DynamicLayer()
        layer.lazy_initialization(keys, keys)
        layer.keys, layer.values = keys + layer_idx, -(keys + layer_idx)
        cache.layers.append(layer)
    return cache, mask


def _step(slots: SlotKVCache, lengths: dict[int, int], order: list[int]) -> None:
    """One decode step: every running row appends its next label (as the model's forward would)."""
    mask = slots.begin_step(1)
    assert mask.shape == (slots.rows, slots.width + 1)
    new = torch.tensor([[rid * 1000 + lengths[rid]] for rid in order], dtype=torch.float32).view(-1, HEADS, 1, DIM)
    for layer_idx, layer in enumerate(slots.layers):
        assert layer.get_seq_length() == slots.width
        keys, values = layer.update(new + layer_idx, -(new + layer_idx))
        assert keys.shape[2] == slots.width + 1
    slots.end_step()
    for rid in order:
        lengths[rid] += 1


def _check(slots: SlotKVCache, lengths: dict[int, int], order: list[int]) -> None:
    mask = slots.live_mask()
    assert slots.rows == len(order)
    for layer_idx, layer in enumerate(slots.layers):
        for row, rid in enumerate(order):
            attended = layer.keys[row, 0, :, 0][mask[row].bool()]
            expected = torch.arange(lengths[rid], dtype=torch.float32) + rid * 1000 + layer_idx
            assert torch.equal(attended, expected), (layer_idx, rid)
            assert torch.equal(layer.values[row, 0, :, 0][mask[row].bool()], -expected)
            assert bool(mask[row, -1]), "every row ends at the last live column (right-aligned)"
    if order:
        assert bool(mask.any(dim=0)[0]), "no leading column that nobody attends"


ops = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), st.lists(st.integers(1, 40), min_size=1, max_size=3)),
        st.tuples(st.just("step"), st.integers(1, 12)),
        st.tuples(st.just("remove"), st.lists(st.booleans(), min_size=1, max_size=8)),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(ops=ops)
def test_rows_keep_their_own_keys_in_order(ops):
    slots = SlotKVCache(slots=8, min_capacity=4)
    lengths: dict[int, int] = {}
    order: list[int] = []
    next_id = 1
    for op, arg in ops:
        if op == "admit":
            arg = arg[: slots.slots - slots.rows]
            if not arg:
                continue
            rows = [(next_id + i, n) for i, n in enumerate(arg)]
            next_id += len(rows)
            cache, mask = _prefill(rows)
            slots.admit(cache, mask)
            for rid, n in rows:
                lengths[rid] = n
                order.append(rid)
        elif op == "step" and order:
            for _ in range(arg):
                _step(slots, lengths, order)
        elif op == "remove" and order:
            flags = (arg * len(order))[: len(order)]
            order = slots.remove(flags, order)
        _check(slots, lengths, order)


def test_storage_grows_and_compacts_instead_of_copying_per_step():
    slots = SlotKVCache(slots=2, min_capacity=8)
    cache, mask = _prefill([(1, 5)])
    slots.admit(cache, mask)
    lengths, order = {1: 5}, [1]
    storages = set()
    for _ in range(100):
        _step(slots, lengths, order)
        storages.add(slots.layers[0].store_k.data_ptr())
    _check(slots, lengths, order)
    assert slots.layers[0].capacity < 2 * 105 + 8  # doubling, not one column at a time
    assert len(storages) <= 6  # a handful of reallocations over 100 steps, none per step


def test_a_long_prompt_joining_a_short_batch_moves_the_batch_once():
    slots = SlotKVCache(slots=4, min_capacity=4)
    cache, mask = _prefill([(1, 3), (2, 2)])
    slots.admit(cache, mask)
    lengths, order = {1: 3, 2: 2}, [1, 2]
    _step(slots, lengths, order)
    cache, mask = _prefill([(3, 30)])
    slots.admit(cache, mask)
    lengths[3] = 30
    order.append(3)
    _check(slots, lengths, order)
    assert slots.width == 30


def test_only_plain_attention_layers_are_held_in_slots():
    cache, _ = _prefill([(1, 3)])
    assert supported(cache)
    assert not supported(DynamicCache())  # no layers: nothing to hold
    cache.layers.append(type("SlidingLayer", (DynamicLayer,), {})())
    assert not supported(cache)


def test_rows_grow_on_demand_and_an_empty_batch_holds_no_storage():
    slots = SlotKVCache(slots=8, min_capacity=4)
    cache, mask = _prefill([(1, 3)])
    slots.admit(cache, mask)
    assert slots.row_capacity == 1  # one request alone holds one row, not max_batch_size
    lengths, order = {1: 3}, [1]
    for rid in (2, 3, 4, 5):
        _step(slots, lengths, order)
        cache, mask = _prefill([(rid, 2)])
        slots.admit(cache, mask)
        lengths[rid] = 2
        order.append(rid)
    _check(slots, lengths, order)
    assert slots.row_capacity == 8
    order = slots.remove([True] * len(order), order)
    assert order == [] and slots.cache is None and slots.row_capacity == 0


def test_storage_shrinks_when_the_rows_that_needed_it_leave():
    slots = SlotKVCache(slots=16, min_capacity=8)
    cache, mask = _prefill([(1, 2000)])
    slots.admit(cache, mask)
    cache, mask = _prefill([(rid, 3) for rid in range(2, 17)])
    slots.admit(cache, mask)
    lengths = {1: 2000} | {rid: 3 for rid in range(2, 17)}
    order = [1, *range(2, 17)]
    _step(slots, lengths, order)
    assert slots.row_capacity == 16 and slots.column_capacity >= 2001
    leaving = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}  # the long prompt and most of the rest
    order = slots.remove([rid in leaving for rid in order], order)
    _check(slots, lengths, order)
    assert slots.width == 4  # the 3 left attend their 4 columns only
    assert slots.row_capacity == 6 and slots.column_capacity == 8  # twice the need, not 16 x 4032
    for _ in range(20):  # and decoding on from the smaller storage keeps every row's keys
        _step(slots, lengths, order)
    _check(slots, lengths, order)


def test_a_reused_slot_starts_clean_even_after_non_finite_keys():
    """A masked column still reaches the attention as 0 x value: a previous occupant's NaN must not stay there."""
    slots = SlotKVCache(slots=2, min_capacity=8)
    cache, mask = _prefill([(1, 6), (2, 2)])
    slots.admit(cache, mask)
    for layer in slots.layers:  # the second row's keys and values went non-finite (an fp16 overflow, say)
        layer.store_k[1].fill_(float("nan"))
        layer.store_v[1].fill_(float("inf"))
    order = slots.remove([False, True], [1, 2])  # it finishes: slot 1 is free, its NaN still in the storage
    cache, mask = _prefill([(3, 1)])
    slots.admit(cache, mask)  # slot 1 reused, with the columns before the newcomer's prompt masked
    order.append(3)
    for layer in slots.layers:
        assert torch.isfinite(layer.keys).all() and torch.isfinite(layer.values).all()
    _check(slots, {1: 6, 3: 1}, order)


def test_the_layers_own_reshaping_is_refused():
    slots = SlotKVCache(slots=2)
    cache, mask = _prefill([(1, 3)])
    slots.admit(cache, mask)
    import pytest

    for call in (lambda l: l.crop(1), lambda l: l.batch_select_indices(torch.tensor([0])), lambda l: l.reset()):
        with pytest.raises(NotImplementedError, match="managed by SlotKVCache"):
            call(slots.layers[0])
