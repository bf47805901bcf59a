"""The batching engine: batched greedy output equals unbatched output, per-request params hold in a batch."""

from __future__ import annotations

import asyncio
import random

import pytest
import torch

from components.bootstrap.dataset import generate
from serving.errors import OverloadedError, ShuttingDownError
from serving.runtime.config import EngineConfig, SamplingParams
from serving.runtime.engine import FINISH_LENGTH, FINISH_STOP, FINISH_TIMEOUT, GenerationEngine


def _engine(hf, **overrides) -> GenerationEngine:
    model, tok = hf
    engine = GenerationEngine(model, tok, EngineConfig(**overrides).resolved(model.config.n_positions))
    engine.start()
    return engine


async def _run(engine, tok, prompt, params, delay=0.0):
    await asyncio.sleep(delay)
    handle = engine.submit(tok(prompt)["input_ids"], params)
    text, last = "", None
    async for ev in handle.events():
        text += ev.text
        last = ev
    return text, last


def _prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    # Different lengths: some prompts repeated to stretch them (still within the 128-token context).
    return [ex.prompt * rng.randint(1, 2) for ex in generate("test", n, seed)]


def _greedy_unbatched(model, tok, prompt: str, n_new: int) -> str:
    """Reference: one prompt alone, no padding, no KV cache: re-run the whole sequence per token."""
    ids = tok(prompt)["input_ids"]
    new: list[int] = []
    with torch.no_grad():
        for _ in range(n_new):
            token = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
            if token == tok.eos_token_id:
                break
            new.append(token)
    return tok.decode(new, skip_special_tokens=True)


def test_batched_greedy_matches_unbatched_output(hf):
    """Many prompts of different lengths, arriving together, decode exactly as each prompt does alone."""
    model, tok = hf
    prompts = _prompts(48, seed=3)
    n_new = 24
    expected = [_greedy_unbatched(model, tok, p, n_new) for p in prompts]
    engine = _engine(hf, max_batch_size=16)
    try:

        async def all_of_them():
            rng = random.Random(0)
            jobs = [
                _run(engine, tok, p, SamplingParams(max_tokens=n_new, temperature=0), rng.random() * 0.05)
                for p in prompts
            ]
            return await asyncio.gather(*jobs)

        results = asyncio.run(all_of_them())
    finally:
        engine.stop()
    mismatches = [(p, e, r[0]) for p, e, r in zip(prompts, expected, results) if e != r[0]]
    assert mismatches == []
    assert len({len(tok(p)["input_ids"]) for p in prompts}) > 5  # the prompts really differ in length


@pytest.mark.parametrize("kv_cache", ["slots", "concat"])
def test_staggered_arrivals_decode_as_alone(hf, monkeypatch, kv_cache):
    """Requests joining and leaving a running batch one by one (as independent clients do), with
    different lengths and max_tokens, a long prompt arriving into a batch of short ones, and slot
    storage small enough to be compacted and grown: each decodes exactly as it does alone."""
    from serving.runtime import kv_slots as slots_module

    monkeypatch.setattr(slots_module, "MIN_CAPACITY", 8)
    model, tok = hf
    prompts = _prompts(20, seed=11)
    prompts.insert(12, " ".join(prompts[:4])[-200:])  # the long one, after a dozen short ones
    budgets = [6 + (7 * i) % 19 for i in range(len(prompts))]
    expected = [_greedy_unbatched(model, tok, p, n) for p, n in zip(prompts, budgets)]
    config = EngineConfig(max_batch_size=6, kv_cache=kv_cache).validate().resolved(model.config.n_positions)
    engine = GenerationEngine(model, tok, config)
    engine.start()
    try:

        async def staggered():
            jobs = [
                _run(engine, tok, p, SamplingParams(max_tokens=n, temperature=0), delay=0.01 * i)
                for i, (p, n) in enumerate(zip(prompts, budgets))
            ]
            return await asyncio.gather(*jobs)

        results = asyncio.run(staggered())
    finally:
        engine.stop()
    assert [r[0] for r in results] == expected
    assert len(tok(prompts[12])["input_ids"]) > 2 * max(len(tok(p)["input_ids"]) for p in prompts[8:12])


def test_batch_mates_do_not_change_a_request(hf):
    """Per-request max_tokens, stop, seed and ignore_eos hold while sharing a batch."""
    _, tok = hf
    engine = _engine(hf, max_batch_size=8)
    prompt = "Q: reverse abc\nA:"
    seeded = SamplingParams(max_tokens=20, temperature=1.0, top_p=0.9, seed=1234, ignore_eos=True)
    try:

        async def scenario():
            alone = await _run(engine, tok, prompt, seeded)
            crowd = await asyncio.gather(
                _run(engine, tok, prompt, seeded),
                _run(engine, tok, "Q: add 2 and 3\nA:", SamplingParams(max_tokens=5, temperature=0)),
                _run(engine, tok, "Q: uppercase xyz\nA:", SamplingParams(max_tokens=30, temperature=0.7, seed=9)),
                _run(engine, tok, prompt, SamplingParams(max_tokens=40, temperature=0, ignore_eos=True)),
            )
            return alone, crowd

        alone, crowd = asyncio.run(scenario())
    finally:
        engine.stop()
    assert crowd[0][0] == alone[0]  # same seed, same tokens, whatever the batch
    assert alone[1].completion_tokens == 20 and alone[1].finish_reason == FINISH_LENGTH
    assert crowd[1][1].completion_tokens <= 5
    assert crowd[3][1].completion_tokens == 40 and crowd[3][1].finish_reason == FINISH_LENGTH


def test_stop_sequence_cuts_text_and_is_never_streamed(hf):
    _, tok = hf
    engine = _engine(hf)
    prompt = "Q: uppercase abc\nA:"
    try:
        full, _ = asyncio.run(_run(engine, tok, prompt, SamplingParams(max_tokens=30, temperature=0, ignore_eos=True)))
        assert len(full) > 6
        stop = full[3:5]
        text, last = asyncio.run(
            _run(engine, tok, prompt, SamplingParams(max_tokens=30, temperature=0, ignore_eos=True, stop=(stop,)))
        )
    finally:
        engine.stop()
    assert text == full[: full.find(stop)]
    assert last.finish_reason == FINISH_STOP


def test_full_queue_refuses_and_stopped_engine_refuses(hf):
    model, tok = hf
    engine = GenerationEngine(model, tok, EngineConfig(max_queue=2).resolved(128))  # worker not started
    loop = asyncio.new_event_loop()
    try:
        params = SamplingParams(max_tokens=4)
        engine.submit([5, 6], params, loop=loop)
        engine.submit([5, 6], params, loop=loop)
        with pytest.raises(OverloadedError, match="--max_queue 2"):
            engine.submit([5, 6], params, loop=loop)
        engine._stopping = True
        with pytest.raises(ShuttingDownError, match="shutting down"):
            engine.submit([5, 6], params, loop=loop)
    finally:
        loop.close()


def test_stop_drains_queued_work(hf):
    """stop() refuses new work but finishes what was already queued."""
    _, tok = hf
    engine = _engine(hf, max_batch_size=2)

    async def scenario():
        handles = [
            engine.submit(tok("Q: add 1 and 2\nA:")["input_ids"], SamplingParams(max_tokens=10, ignore_eos=True))
            for _ in range(5)
        ]
        stopper = asyncio.get_running_loop().run_in_executor(None, engine.stop)
        finals = []
        for h in handles:
            async for ev in h.events():
                last = ev
            finals.append(last)
        await stopper
        return finals

    finals = asyncio.run(scenario())
    assert [f.completion_tokens for f in finals] == [10] * 5
    assert not engine.alive


def test_request_past_its_deadline_times_out(hf):
    """A fake clock that jumps past request_timeout_s ends the request with finish_reason timeout."""
    model, tok = hf
    now = [0.0]

    def clock():
        now[0] += 1.0  # every reading advances one second
        return now[0]

    engine = GenerationEngine(model, tok, EngineConfig(request_timeout_s=5).resolved(128), clock=clock)
    engine.start()
    try:
        _, last = asyncio.run(_run(engine, tok, "Q: x\nA:", SamplingParams(max_tokens=100, ignore_eos=True)))
    finally:
        engine.stop()
    assert last.finish_reason == FINISH_TIMEOUT
    assert last.completion_tokens < 100


def test_non_streaming_handle_gets_one_event_with_the_same_text(hf):
    _, tok = hf
    engine = _engine(hf)
    params = SamplingParams(max_tokens=30, temperature=0, ignore_eos=True)
    ids = tok("Q: uppercase abc\nA:")["input_ids"]

    async def scenario():
        streamed = [ev async for ev in engine.submit(ids, params).events()]
        whole = [ev async for ev in engine.submit(ids, params, stream=False).events()]
        return streamed, whole

    try:
        streamed, whole = asyncio.run(scenario())
    finally:
        engine.stop()
    assert len(streamed) > 1 and len(whole) == 1
    assert whole[0].text == "".join(ev.text for ev in streamed)
    assert whole[0].finish_reason == FINISH_LENGTH and whole[0].completion_tokens == 30


class _Counting:
    """An observer that counts what reaches the metrics."""

    def __init__(self):
        self.calls = 0

    def __getattr__(self, name):
        def record(*_args):
            self.calls += 1
        return record


def test_warmup_runs_before_serving_and_leaves_no_trace_in_metrics(hf):
    """The warmup generations (a batch, then one alone) finish, are not counted, and the engine then serves."""
    model, tok = hf
    counting = _Counting()
    engine = GenerationEngine(model, tok, EngineConfig().resolved(model.config.n_positions), observer=counting)
    engine.start()
    try:
        took = engine.warmup(tok("2+2=")["input_ids"], requests=3)
        assert took > 0
        assert counting.calls == 0, "warmup requests reached the metrics"
        assert engine.observer is counting
        text, last = asyncio.run(_run(engine, tok, "2+2=", SamplingParams(max_tokens=4, temperature=0.0)))
        assert last.finish_reason in (FINISH_STOP, FINISH_LENGTH)
        assert counting.calls > 0, "a served request after warmup is counted"
    finally:
        engine.stop(timeout=10)


def test_warmup_that_cannot_generate_fails_loudly(hf):
    model, tok = hf
    engine = GenerationEngine(model, tok, EngineConfig().resolved(model.config.n_positions))
    engine.start()
    try:
        with pytest.raises(RuntimeError, match="warmup generation failed"):
            engine.warmup([10**9], requests=1)  # a token id outside the vocabulary: the forward pass fails
    finally:
        engine.stop(timeout=10)


def test_warmup_fits_a_small_queue(hf):
    """--max_queue 1 must not refuse the server's own warmup batch."""
    model, tok = hf
    engine = GenerationEngine(model, tok, EngineConfig(max_queue=1).resolved(model.config.n_positions))
    engine.start()
    try:
        assert engine.warmup(tok("2+2=")["input_ids"], requests=4) > 0
    finally:
        engine.stop(timeout=10)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_slot_cache_serves_rope_and_grouped_query_models_as_alone(hf, arch):
    """Beyond GPT-2: rotary positions and grouped-query attention (random tiny Llama / Qwen2 weights)
    decode in the slot cache, with staggered arrivals and varied lengths, exactly as each prompt alone."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    _, tok = hf
    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[arch]
    torch.manual_seed(0)
    model = model_cls(config_cls(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        initializer_range=0.2,  # peaked logits: no near-ties for float rounding to flip
    )).eval()  # fmt: skip
    rng = random.Random(1)
    prompts = [[rng.randrange(3, len(tok)) for _ in range(rng.randint(3, 40))] for _ in range(12)]
    budgets = [rng.randint(3, 20) for _ in prompts]

    def alone(ids: list[int], n: int) -> str:
        new: list[int] = []
        with torch.no_grad():
            for _ in range(n):
                new.append(int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax()))
        return tok.decode(new, skip_special_tokens=True)

    engine = GenerationEngine(model, tok, EngineConfig(max_batch_size=4).resolved(256))
    engine.start()
    try:

        async def one(i: int):
            await asyncio.sleep(0.01 * i)
            params = SamplingParams(max_tokens=budgets[i], temperature=0, ignore_eos=True)
            async for event in engine.submit(prompts[i], params, stream=False).events():
                last = event
            return last

        async def staggered():
            return await asyncio.gather(*(one(i) for i in range(len(prompts))))

        results = asyncio.run(staggered())
    finally:
        engine.stop()
    assert [r.error for r in results] == [None] * len(prompts)
    assert [r.text for r in results] == [alone(p, n) for p, n in zip(prompts, budgets)]


@pytest.mark.parametrize("kv_cache", ["slots", "concat"])
def test_a_failed_prefill_fails_its_newcomers_only(hf, monkeypatch, kv_cache):
    """One arrival whose prefill raises (an out-of-memory on a long prompt, say) gets an error; the request
    already decoding goes on untouched and its text is what it is alone."""
    model, tok = hf
    poison = tok("poison pill prompt")["input_ids"]
    engine = _engine(hf, max_batch_size=4, kv_cache=kv_cache)
    real = engine._prefill

    def prefill(seqs):
        if any(list(s.prompt_ids) == poison for s in seqs):
            raise RuntimeError("out of memory (injected)")
        return real(seqs)

    monkeypatch.setattr(engine, "_prefill", prefill)
    prompt = _prompts(1, seed=5)[0]
    expected = _greedy_unbatched(model, tok, prompt, 50)
    try:

        async def both():
            return await asyncio.gather(
                _run(engine, tok, prompt, SamplingParams(max_tokens=50, temperature=0)),
                _run(engine, tok, "poison pill prompt", SamplingParams(max_tokens=5, temperature=0), delay=0.02),
            )

        (text, last), (_, failed) = asyncio.run(both())
    finally:
        engine.stop()
    assert failed.finish_reason == "error" and "out of memory (injected)" in failed.error
    assert last.finish_reason in (FINISH_LENGTH, FINISH_STOP) and text == expected


def test_an_idle_engine_keeps_no_kv_storage_alive(hf):
    import gc
    import time

    from serving.runtime.kv_slots import SlotLayer

    model, tok = hf
    engine = _engine(hf, max_batch_size=4)
    try:

        async def some():
            return await asyncio.gather(*[
                _run(engine, tok, p, SamplingParams(max_tokens=8, temperature=0), delay=0.01 * i)
                for i, p in enumerate(_prompts(3, seed=2))
            ])  # fmt: skip

        assert all(last.finish_reason in (FINISH_LENGTH, FINISH_STOP) for _, last in asyncio.run(some()))
        time.sleep(0.2)  # the worker now waits for work
        gc.collect()
        alive = [o for o in gc.get_objects() if isinstance(o, SlotLayer)]
    finally:
        engine.stop()
    assert alive == []
