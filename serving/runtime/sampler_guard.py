"""Per-row isolation for the batch sampler: one row's parameters never fail the others.

:func:`guard_rows` wraps ``choose_tokens(logits, params, generators, eos, ...)``. When the
batched call raises (``torch.multinomial`` refuses NaN/inf probabilities that a row's
extreme parameters produced) or returns an out-of-vocabulary id, it repeats the call row
by row; a row that still fails falls back to its greedy choice (argmax of its finite
logits) and is logged. Requests keep their tokens flowing; the bad row degrades to greedy
instead of failing itself and everyone decoding alongside it. (The model layer clamps the
known cases first: temperature below 1e-5 is greedy, top_p below 1e-6 keeps one token.)
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

import torch

logger = logging.getLogger(__name__)


def _greedy(row: torch.Tensor) -> int:
    finite = torch.nan_to_num(row.float(), nan=float("-inf"), posinf=torch.finfo(torch.float32).max)
    return int(finite.argmax().item())


def guard_rows(choose: Callable[..., list[int]]) -> Callable[..., list[int]]:
    """Decorate a batch sampler so a failing row is retried alone, then made greedy (see module docstring)."""

    @functools.wraps(choose)
    def guarded(logits: torch.Tensor, params: Sequence, *args, **kwargs) -> list[int]:
        batch, vocab = logits.shape[0], logits.shape[-1]
        try:
            tokens = choose(logits, params, *args, **kwargs)
            if len(tokens) == batch and all(0 <= t < vocab for t in tokens):
                return tokens
        except (RuntimeError, ValueError, OverflowError, ZeroDivisionError) as exc:
            logger.warning("batch sampling failed (%s); sampling its %d rows one by one", exc, batch)

        def row_arg(value, i):  # per-row sequences (params, generators, histories...) are sliced
            if isinstance(value, (list, tuple)) and len(value) == batch:
                return value[i : i + 1]
            return value

        out = []
        for i in range(batch):
            try:
                [tok] = choose(
                    logits[i : i + 1],
                    params[i : i + 1],
                    *(row_arg(a, i) for a in args),
                    **{k: row_arg(v, i) for k, v in kwargs.items()},
                )
                if not 0 <= tok < vocab:
                    raise ValueError(f"token id {tok} outside the vocabulary")
            except (RuntimeError, ValueError, OverflowError, ZeroDivisionError) as exc:
                logger.warning("sampling row %d failed with %s (%s); using its greedy token", i, params[i], exc)
                tok = _greedy(logits[i])
            out.append(tok)
        return out

    return guarded
