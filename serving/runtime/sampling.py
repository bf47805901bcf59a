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
    histories: Sequence[Sequence[int]] | None = None,
    generated: Sequence[int] | None = None,
) -> list[int]:
    """Pick the next token for every row.

    Args:
        logits: ``[batch, vocab]`` next-token logits.
        params: one entry per row.
        generators: one per row, used only by rows with ``temperature > 0``.
        eos_token_id: suppressed for rows with ``ignore_eos`` (and below ``min_tokens``).
        histories: per row, the prompt and generated ids (for ``repetition_penalty``).
        generated: per row, tokens generated so far (for ``min_tokens``).

    Returns:
        The chosen token id per row.
    """
    logits = logits.float()
    vocab = logits.shape[-1]
    rows: list[int] = []  # (row, token) pairs to ban, written in one indexing op (not one per row)
    cols: list[int] = []
    for i, p in enumerate(params):
        below_min = generated is not None and generated[i] < p.min_tokens
        if eos_token_id is not None and (p.ignore_eos or below_min):
            rows.append(i)
            cols.append(eos_token_id)
        if p.stop_token_ids and below_min:
            for t in p.stop_token_ids:
                if t < vocab:
                    rows.append(i)
                    cols.append(t)
    if rows:
        logits[rows, cols] = float("-inf")
    for i, p in enumerate(params):
        if p.repetition_penalty != 1.0 and histories is not None and histories[i]:
            # As vLLM and transformers: positive logits are divided, negative ones multiplied.
            seen = torch.tensor(sorted(set(histories[i])), dtype=torch.long, device=logits.device)
            row = logits[i, seen]
            logits[i, seen] = torch.where(row > 0, row / p.repetition_penalty, row * p.repetition_penalty)
    chosen = logits.argmax(dim=-1).tolist()
    for i, p in enumerate(params):
        if p.temperature <= 0.0:
            continue
        row = logits[i] / p.temperature
        if p.top_k > 0 and p.top_k < vocab:
            kth = torch.topk(row, p.top_k).values[-1]
            row = row.masked_fill(row < kth, float("-inf"))
        probs = torch.softmax(row, dim=-1)
        if p.min_p > 0.0:
            probs = torch.where(probs >= p.min_p * probs.max(), probs, torch.zeros_like(probs))
            probs = probs / probs.sum()
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


def find_stop_match(text: str, stops: Sequence[str], start: int = 0) -> tuple[int, str]:
    """Earliest stop-sequence match in ``text[start:]``: (index into ``text``, the stop), or (-1, "")."""
    best, which = -1, ""
    for s in stops:
        idx = text.find(s, start)
        if idx != -1 and (best == -1 or idx < best):
            best, which = idx, s
    return best, which


def holdback(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters could still become a stop sequence (must not be streamed yet)."""
    longest = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                longest = max(longest, k)
                break
    return longest
