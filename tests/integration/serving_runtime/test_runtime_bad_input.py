"""Bad input gets a 4xx with an OpenAI error body that names the problem; fuzzing finds no 5xx."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest

from tests.integration.serving_runtime.conftest import MODEL

pytestmark = pytest.mark.integration

OK_COMPLETION = {"model": MODEL, "prompt": "Q: add 1 and 2\nA:", "max_tokens": 2}
OK_CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
LONG_PROMPT = "Q: uppercase abcdefghij klmnopqrst\nA:" * 20


def _with(base: dict, **changes) -> dict:
    out = dict(base)
    for k, v in changes.items():
        if v is ...:
            out.pop(k, None)
        else:
            out[k] = v
    return out


CASES = [
    # (path, body (dict, or raw str), status, param, message fragment)
    ("completions", "{not json", 400, None, "not valid JSON"),
    ("completions", "", 400, None, "body is empty"),
    ("completions", "[1, 2]", 400, None, "must be a JSON object"),
    ("completions", _with(OK_COMPLETION, prompt=...), 400, "prompt", "missing required parameter 'prompt'"),
    ("completions", _with(OK_COMPLETION, prompt=""), 400, "prompt", "prompt must not be empty"),
    ("completions", _with(OK_COMPLETION, prompt=5), 400, "prompt", "invalid value for 'prompt'"),
    ("completions", _with(OK_COMPLETION, prompt=LONG_PROMPT), 400, "prompt", "more than the limit"),
    ("completions", _with(OK_COMPLETION, max_tokens=-3), 400, "max_tokens", "max_tokens must be >= 1"),
    ("completions", _with(OK_COMPLETION, max_tokens=10**9), 400, "max_tokens", "exceeds the context limit"),
    ("completions", _with(OK_COMPLETION, max_tokens="10"), 400, "max_tokens", "invalid value for 'max_tokens'"),
    ("completions", _with(OK_COMPLETION, temperature=5), 400, "temperature", "temperature must be within [0, 2]"),
    ("completions", _with(OK_COMPLETION, top_p=0), 400, "top_p", "top_p must be within (0, 1]"),
    ("completions", _with(OK_COMPLETION, n=2), 400, "n", "n=2 (several choices per request) is not supported"),
    ("completions", _with(OK_COMPLETION, logprobs=3), 400, "logprobs", "log probabilities is not supported"),
    ("completions", _with(OK_COMPLETION, echo=True), 400, "echo", "not supported"),
    ("completions", _with(OK_COMPLETION, best_of=3), 400, "best_of", "not supported"),
    ("completions", _with(OK_COMPLETION, frobnicate=1), 400, "frobnicate", "unknown parameter 'frobnicate'"),
    ("completions", _with(OK_COMPLETION, stop=["a", "b", "c", "d", "e"]), 400, "stop", "at most 4 stop"),
    ("completions", _with(OK_COMPLETION, prompt=["a", "b"]), 400, "prompt", "list of 2 prompts is not supported"),
    ("completions", _with(OK_COMPLETION, prompt=[1, 99999]), 400, "prompt", "outside the vocabulary"),
    ("completions", _with(OK_COMPLETION, model="nope"), 404, "model", "model 'nope' is not served here"),
    ("completions", _with(OK_COMPLETION, stream_options={"include_usage": True}), 400, "stream_options", "only allowed with stream"),
    ("chat/completions", _with(OK_CHAT, messages=[]), 400, "messages", "invalid value for 'messages'"),
    ("chat/completions", _with(OK_CHAT, messages="hi"), 400, "messages", "invalid value for 'messages'"),
    ("chat/completions", _with(OK_CHAT, messages=[{"role": "wizard", "content": "x"}]), 400, "messages.0.role", "invalid value"),
    ("chat/completions", _with(OK_CHAT, messages=[{"role": "user", "content": ""}]), 400, "messages.0.content", "must not be empty"),
    ("chat/completions", _with(OK_CHAT, messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]), 400, "messages.0.content", "only text parts"),
    ("chat/completions", _with(OK_CHAT, tools=[{"type": "function"}]), 400, "tools", "tool calling is not supported"),
    ("chat/completions", _with(OK_CHAT, max_tokens=5, max_completion_tokens=5), 400, "max_completion_tokens", "not both"),
    ("chat/completions", _with(OK_CHAT, max_tokens=..., max_completion_tokens=0), 400, "max_completion_tokens", "max_completion_tokens must be >= 1"),
]


@pytest.mark.parametrize("path, body, status, param, fragment", CASES)
def test_bad_openai_request_is_refused_with_a_clear_error(server, path, body, status, param, fragment):
    content = body if isinstance(body, str) else json.dumps(body)
    resp = httpx.post(
        f"{server.url}/openai/v1/{path}", content=content, headers={"content-type": "application/json"}, timeout=30
    )
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert fragment in err["message"]
    assert err["param"] == param
    assert err["type"] == ("not_found_error" if status == 404 else "invalid_request_error")


def test_oversized_body_is_413(server):
    resp = httpx.post(f"{server.url}/openai/v1/completions", content=b"x" * (2 << 20), timeout=30)
    assert resp.status_code == 413
    assert "exceeds" in resp.json()["error"]["message"]


V2_CASES = [
    ({"inputs": [{"name": "text_input", "shape": [1], "datatype": "INT32", "data": [1]}]}, "send prompts as a BYTES tensor"),
    ({"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": [""]}]}, "must not be empty"),
    ({"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["hi"]}], "parameters": {"max_tokens": "9"}}, "parameters.max_tokens must be int"),
    ({"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["hi"]}], "parameters": {"beam": 2}}, "unsupported parameter 'beam'"),
    ({"inputs": []}, "no inputs"),
]


@pytest.mark.parametrize("body, fragment", V2_CASES)
def test_bad_v2_request_is_refused(server, body, fragment):
    resp = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=body, timeout=30)
    assert 400 <= resp.status_code < 500, resp.text
    assert fragment in resp.text


def _mutations(rng: random.Random, n: int) -> list[tuple[str, bytes, dict]]:
    """Malformed requests: broken JSON, wrong types, odd values, wrong shapes, odd headers."""
    weird = [None, True, -1, 0, 2**70, -(2**70), 1e308, float("nan"), "", "x" * 5000, "\u0000\ud7ff\U0001f600",
             [], [[]], {}, {"a": {"b": []}}, [None], ["x"] * 50, 3.7, "NaN", "-1", [1, -5], [0] * 200]  # fmt: skip
    paths = ["/openai/v1/completions", "/openai/v1/chat/completions", f"/v2/models/{MODEL}/infer",
             f"/v1/models/{MODEL}:predict", "/v2/models/other/infer", "/openai/v1/completions"]  # fmt: skip
    v2_ok = {"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["hi"]}],
             "parameters": {"max_tokens": 2}}  # fmt: skip
    bases = {paths[0]: OK_COMPLETION, paths[1]: OK_CHAT, paths[2]: v2_ok, paths[3]: {"instances": ["hi"]},
             paths[4]: v2_ok, paths[5]: OK_COMPLETION}  # fmt: skip
    out = []
    for _ in range(n):
        path = rng.choice(paths)
        body = json.loads(json.dumps(bases[path]))
        kind = rng.randrange(6)
        if kind == 0:  # wrong value in a top-level field, or an unknown field
            key = rng.choice([*body.keys(), "n", "logprobs", "seed", "stop", "top_p", "stream", "zzz"])
            body[key] = rng.choice(weird)
        elif kind == 1:  # remove a field
            if body:
                body.pop(rng.choice(list(body)))
        elif kind == 2:  # nested damage
            if "messages" in body:
                body["messages"] = [{rng.choice(["role", "content", "x"]): rng.choice(weird)}]
            elif "inputs" in body:
                body["inputs"][0][rng.choice(["name", "shape", "datatype", "data", "parameters"])] = rng.choice(weird)
            else:
                body[rng.choice(list(body) or ["prompt"])] = {"nested": rng.choice(weird)}
        raw = json.dumps(body, allow_nan=True).encode()
        if kind == 3:  # truncated / corrupted bytes
            cut = rng.randrange(max(len(raw), 1))
            raw = raw[:cut] + bytes(rng.randrange(256) for _ in range(rng.randrange(4)))
        elif kind == 4:  # a JSON document of the wrong shape
            raw = json.dumps(rng.choice(weird), allow_nan=True).encode()
        headers = {"content-type": rng.choice(["application/json", "text/plain", "application/octet-stream"])}
        if kind == 5 and "max_tokens" in body:
            body["max_tokens"] = rng.choice([0, -1, 10**6, 1, 2])
            raw = json.dumps(body).encode()
        out.append((path, raw, headers))
    return out


def test_fuzzed_requests_never_get_a_5xx(server):
    requests = _mutations(random.Random(20251128), 400)

    async def send_all():
        sem = asyncio.Semaphore(16)
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

            async def one(path, raw, headers):
                async with sem:
                    resp = await client.post(path, content=raw, headers=headers)
                    return path, raw, resp.status_code, resp.text[:300]

            return await asyncio.gather(*(one(*r) for r in requests))

    results = asyncio.run(send_all())
    server_errors = [r for r in results if r[2] >= 500]
    assert server_errors == []
    assert sum(1 for r in results if 400 <= r[2] < 500) > 300  # mostly refused, as malformed requests should be
    # Still healthy and answering.
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200
    ok = httpx.post(f"{server.url}/openai/v1/completions", json=OK_COMPLETION, timeout=30)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] >= 1
