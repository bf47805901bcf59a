"""Per-row token choice for a shared batch, and stop-sequence handling for streamed text.

Each row of a batch has its own :class:`~serving.runtime.config.SamplingParams` and its
own ``torch.Generator``; greedy rows are one vectorised argmax, sampled rows draw from
their own generator so a seeded request gives the same tokens whoever shares its batch
(up to float rounding of the batched forward pass).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from serving.runtime.config import SamplingParams
from serving.runtime.sampler_guard import guard_rows


@guard_rows
def choose_tokens(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator],
    eos_token_id: int | None,
) -> list[int]:
    """Pick the next token for every row.

    Args:
        logits: ``[batch, vocab]`` next-token logits.
        params: one entry per row.
        generators: one per row, used only by rows with ``temperature > 0``.
        eos_token_id: suppressed for rows with ``ignore_eos``.

    Returns:
        The chosen token id per row.
    """
    logits = logits.float()
    if eos_token_id is not None:
        rows = [i for i, p in enumerate(params) if p.ignore_eos]
        if rows:
            logits[rows, eos_token_id] = float("-inf")
    chosen = logits.argmax(dim=-1).tolist()
    for i, p in enumerate(params):
        if p.temperature <= 0.0:
            continue
        probs = torch.softmax(logits[i] / p.temperature, dim=-1)
        if p.top_p < 1.0:
            probs = _top_p_filter(probs, p.top_p)
        chosen[i] = int(torch.multinomial(probs, 1, generator=generators[i]).item())
    return chosen


def _top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero all but the smallest set of most likely tokens whose mass reaches ``top_p``."""
    sorted_probs, order = torch.sort(probs, descending=True)
    cumulative = torch.cumsum(sorted_probs, dim=-1)
    # Keep a token when the mass before it is still below top_p (always keeps the first).
    keep_sorted = (cumulative - sorted_probs) < top_p
    keep = torch.zeros_like(probs, dtype=torch.bool)
    keep[order[keep_sorted]] = True
    filtered = torch.where(keep, probs, torch.zeros_like(probs))
    return filtered / filtered.sum()


def find_stop(text: str, stops: Sequence[str]) -> int:
    """Index of the earliest stop-sequence match in ``text``, or -1."""
    best = -1
    for s in stops:
        idx = text.find(s)
        if idx != -1 and (best == -1 or idx < best):
            best = idx
    return best


def holdback(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters could still become a stop sequence (must not be streamed yet)."""
    longest = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                longest = max(longest, k)
                break
    return longest
