"""A row whose sampling arithmetic overflows fails neither itself nor its batch mates.

The model layer clamps the known cases (temperature < 1e-5 is greedy, top_p >= 1e-6); these
tests hand the engine and the sampler the raw values, as a future code path might.
"""

from __future__ import annotations

import asyncio

import torch

from serving.runtime.config import SamplingParams
from serving.runtime.engine import FINISH_LENGTH
from serving.runtime.sampling import choose_tokens

from tests.unit.serving_runtime.test_runtime_engine import _engine, _run

POISON = [
    SamplingParams(max_tokens=12, temperature=1e-40, ignore_eos=True),
    SamplingParams(max_tokens=12, temperature=1.0, top_p=1e-300, ignore_eos=True),
    SamplingParams(max_tokens=12, temperature=5e-324, top_p=5e-324, ignore_eos=True),
]


def test_poisoned_rows_sample_greedily_and_the_others_are_untouched():
    logits = torch.randn(5, 64, generator=torch.Generator().manual_seed(0))
    clean = [SamplingParams(max_tokens=4, temperature=0.9, seed=s) for s in (1, 2)]

    def gens():
        return [torch.Generator().manual_seed(s) for s in (1, 2)]

    alone = choose_tokens(logits[3:].clone(), clean, gens(), None)
    mixed = choose_tokens(logits.clone(), POISON + clean, [torch.Generator() for _ in POISON] + gens(), None)
    assert mixed[3:] == alone  # the seeded rows draw exactly what they draw without the poisoned rows
    assert mixed[:3] == logits[:3].argmax(dim=-1).tolist()  # the poisoned rows fall back to greedy


def test_poisoned_requests_in_a_running_batch_fail_nobody(hf):
    _, tok = hf
    engine = _engine(hf, max_batch_size=8)
    normal = [SamplingParams(max_tokens=12, temperature=0.8, seed=i, ignore_eos=True) for i in range(3)]
    try:

        async def scenario():
            return await asyncio.gather(
                *(_run(engine, tok, "Q: add 1 and 2\nA:", p, delay=0.01 * i) for i, p in enumerate(POISON + normal))
            )

        results = asyncio.run(scenario())
    finally:
        engine.stop()
    for text, last in results:
        assert last.finish_reason == FINISH_LENGTH and last.completion_tokens == 12, last
