"""Incremental detokenization: streamed text equals the non-streamed text, emoji and stop strings included."""

from __future__ import annotations

import asyncio
import random

import pytest

from components.bootstrap.dataset import generate
from serving.runtime.config import EngineConfig, SamplingParams
from serving.runtime.detokenize import DecoderKind, decoder_kind, make_decoder
from serving.runtime.engine import FINISH_STOP, GenerationEngine

TEXTS = [
    "Hello 👋 world",
    "日本語のテキスト、そして中文。",
    "family: 👨‍👩‍👧‍👦 flags: 🇫🇷🇯🇵 skin: 👍🏽",
    "café naïve résumé — “quotes” … ±½",
    "mixed: a😀b😃c😄d, ∑x² = ∫f(x)dx",
    "  leading spaces and\ttabs\nnew lines\n\n",
]


def _deltas(tok, ids, kind):
    decoder = make_decoder(tok, kind)
    return [decoder.step(t) for t in ids]


@pytest.mark.parametrize("kind", list(DecoderKind))
def test_deltas_add_up_to_decode_and_never_split_a_character(hf, kind):
    """Emoji (multi-token, ZWJ sequences), CJK, accents and random token ids: joined deltas == decode(ids)."""
    _, tok = hf
    rng = random.Random(5)
    cases = [tok(t)["input_ids"] for t in TEXTS] + [tok(ex.prompt)["input_ids"] for ex in generate("test", 20, 3)]
    cases += [[rng.randrange(len(tok)) for _ in range(rng.randint(1, 60))] for _ in range(40)]
    split_chars = 0
    for ids in cases:
        deltas = _deltas(tok, ids, kind)
        full = tok.decode(ids, skip_special_tokens=True)
        joined = "".join(deltas)
        if full.endswith("\ufffd"):  # an incomplete character at the end stays held back
            assert full.startswith(joined)
        else:
            assert joined == full, ids
        for d in deltas:
            assert not d.endswith("\ufffd") or "\ufffd" in full
        # The emoji really span several tokens, and their first tokens emit nothing.
        split_chars += sum(1 for d in deltas if d == "")
    assert split_chars > 20
    assert tok.decode(tok("👋")["input_ids"]) == "👋" and len(tok("👋")["input_ids"]) > 1


def test_fast_tokenizer_gets_decode_stream(hf):
    _, tok = hf
    assert decoder_kind(tok) is DecoderKind.STREAM


def _engine(hf, **overrides) -> GenerationEngine:
    model, tok = hf
    engine = GenerationEngine(model, tok, EngineConfig(**overrides).resolved(model.config.n_positions))
    engine.start()
    return engine


async def _text(engine, ids, params, stream):
    events = [ev async for ev in engine.submit(ids, params, stream=stream).events()]
    for ev in events[:-1]:
        assert ev.text and not ev.text.endswith("\ufffd")  # no half characters on the wire
    return "".join(ev.text for ev in events), events[-1], len(events)


def test_streamed_text_equals_non_streamed_for_many_prompts(hf):
    """Greedy and seeded high-temperature sampling (random bytes from the random-weight model, so split
    multi-byte characters): the streamed deltas join to exactly the non-streamed text."""
    _, tok = hf
    prompts = [ex.prompt for ex in generate("test", 12, 11)] + TEXTS
    engine = _engine(hf, max_batch_size=8)

    async def scenario():
        jobs = []
        for i, p in enumerate(prompts):
            ids = tok(p)["input_ids"]
            params = SamplingParams(max_tokens=40, temperature=0 if i % 2 else 1.8, seed=i, ignore_eos=True)
            jobs += [_text(engine, ids, params, True), _text(engine, ids, params, False)]
        return await asyncio.gather(*jobs)

    try:
        results = asyncio.run(scenario())
    finally:
        engine.stop()
    streamed, whole = results[0::2], results[1::2]
    assert [s[0] for s in streamed] == [w[0] for w in whole]
    assert all(w[2] == 1 for w in whole) and sum(s[2] for s in streamed) > 10 * len(prompts)
    assert any(ord(c) > 127 for s in streamed for c in s[0])  # multi-byte characters were generated


def test_stop_strings_that_span_tokens(hf):
    """A stop string made of the end of one token and the start of the next cuts exactly there, streamed or not;
    include_stop_str_in_output keeps it; a stop token id ends the output too."""
    model, tok = hf
    prompt_ids = tok("Hello 👋 world")["input_ids"]
    engine = _engine(hf)
    base = SamplingParams(max_tokens=40, temperature=0, ignore_eos=True)
    gen_ids = _greedy_ids(model, tok, prompt_ids, 40)
    try:
        full, _, _ = asyncio.run(_text(engine, prompt_ids, base, False))
        assert full == tok.decode(gen_ids)
        # Pick a stop string crossing a token boundary: the last char of token k + the first two of token k+1.
        pieces = [tok.decode([t]) for t in gen_ids]
        k = next(i for i in range(len(pieces) - 1) if pieces[i] and len(pieces[i + 1]) >= 2
                 and "\ufffd" not in pieces[i] + pieces[i + 1])  # fmt: skip
        stop = pieces[k][-1] + pieces[k + 1][:2]
        cut = full.find(stop)
        assert cut > 0

        async def with_stop():
            p = SamplingParams(**{**base.__dict__, "stop": (stop,)})
            keep = SamplingParams(**{**base.__dict__, "stop": (stop,), "include_stop_str_in_output": True})
            return await asyncio.gather(
                _text(engine, prompt_ids, p, True), _text(engine, prompt_ids, p, False),
                _text(engine, prompt_ids, keep, True),
            )  # fmt: skip

        (s_text, s_last, _), (w_text, w_last, _), (k_text, _, _) = asyncio.run(with_stop())
        first_gen = asyncio.run(_text(engine, prompt_ids, SamplingParams(**{**base.__dict__, "max_tokens": 1}), False))
    finally:
        engine.stop()
    assert s_text == w_text == full[:cut]
    assert s_last.finish_reason == w_last.finish_reason == FINISH_STOP
    assert k_text == full[: cut + len(stop)]
    assert first_gen[0]  # the first token has text of its own


def test_stop_token_ids_and_min_tokens(hf):
    """stop_token_ids end the output (without the token's text unless asked); min_tokens holds them off."""
    model, tok = hf
    ids = tok("Q: add 1 and 2\nA:")["input_ids"]
    engine = _engine(hf)
    base = SamplingParams(max_tokens=30, temperature=0, ignore_eos=True)
    ref = _greedy_ids(model, tok, ids, 30)
    try:
        stop_id = ref[4]
        first = ref.index(stop_id)
        cut = SamplingParams(**{**base.__dict__, "stop_token_ids": (stop_id,)})
        text, last, _ = asyncio.run(_text(engine, ids, cut, True))
        keep = SamplingParams(**{**base.__dict__, "stop_token_ids": (stop_id,), "include_stop_str_in_output": True})
        kept, _, _ = asyncio.run(_text(engine, ids, keep, False))
        held = SamplingParams(**{**base.__dict__, "stop_token_ids": (stop_id,), "min_tokens": 30})
        _, held_last, _ = asyncio.run(_text(engine, ids, held, False))
    finally:
        engine.stop()
    assert text == tok.decode(ref[:first]) and last.finish_reason == FINISH_STOP
    assert last.completion_tokens == first + 1
    assert kept == tok.decode(ref[: first + 1])
    assert held_last.completion_tokens == 30  # the stop token was suppressed until min_tokens


def _greedy_ids(model, tok, ids, n):
    """Reference generated ids: the whole sequence re-run per token, eos suppressed."""
    import torch

    new: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            logits = model(input_ids=torch.tensor([ids + new])).logits[0, -1]
            logits[tok.eos_token_id] = float("-inf")
            new.append(int(logits.argmax()))
    return new
