"""The model server under an adversarial client: fuzzed and hand-written malformed requests on every route.

Against a real ``python -m serving`` process: a schema fuzzer (schemathesis, over the
server's own ``/openapi.json``, valid and invalid data), a property-based mutator
(hypothesis: a valid body with one field replaced by a hostile value) and a table of
named edge cases per field. Every answer must be below 500 and every refusal must
name the field at fault; afterwards the server is still ready, a valid request
succeeds, and memory is back within a bound.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.integration.serving_runtime.conftest import MODEL, VERSION

pytestmark = pytest.mark.integration

MEMORY_BOUND = 150 * 2**20  # RSS growth allowed over a whole fuzz run (the tiny model process is ~550 MiB)
FUZZ_SETTINGS = settings(
    max_examples=250,
    deadline=None,
    database=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)
V2_INPUT = {"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["Q: add 1 and 2\nA:"]}
VALID = {
    "/openai/v1/completions": {"model": MODEL, "prompt": "Q: add 1 and 2\nA:", "max_tokens": 3},
    "/openai/v1/chat/completions": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
    f"/v1/models/{MODEL}:predict": {"instances": ["Q: add 1 and 2\nA:"], "parameters": {"max_tokens": 3}},
    f"/v2/models/{MODEL}/infer": {"inputs": [V2_INPUT], "parameters": {"max_tokens": 3}},
}


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def baseline_rss(server, client):
    for path, body in VALID.items():  # warm every route before measuring
        assert client.post(path, json=body).status_code == 200
    return psutil.Process(server.process.pid).memory_info().rss


def assert_still_serving(server, client, baseline_rss: int) -> None:
    assert client.get("/v2/health/ready").status_code == 200
    resp = client.post("/openai/v1/completions", json=VALID["/openai/v1/completions"])
    assert resp.status_code == 200 and resp.json()["usage"]["completion_tokens"] == 3
    grown = psutil.Process(server.process.pid).memory_info().rss - baseline_rss
    assert grown < MEMORY_BOUND, f"RSS grew by {grown / 2**20:.0f} MiB"


def _assert_refusal(resp: httpx.Response, what) -> None:
    assert resp.status_code < 500, (what, resp.status_code, resp.text[:400])
    if resp.status_code >= 400:
        err = resp.json().get("error")
        assert err, (what, resp.text[:300])
        message = err["message"] if isinstance(err, dict) else err
        assert isinstance(message, str) and message, (what, resp.text[:300])


# ---- schema-based fuzzing ------------------------------------------------------------------


def test_schema_fuzz_of_every_documented_route_gives_no_5xx(server, client, baseline_rss):
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    # The schema documents request bodies of every inference route (so the fuzzer can build them).
    assert {"POST /openai/v1/completions", "POST /openai/v1/chat/completions",
            "POST /v2/models/{model_name}/infer", "POST /v1/models/{model_name}:predict"} <= labels  # fmt: skip
    documented = json.loads(client.get("/openapi.json").text)["paths"]
    assert "requestBody" in documented["/openai/v1/completions"]["post"]
    assert {"400", "413", "429"} <= set(documented["/openai/v1/completions"]["post"]["responses"])
    strategy = st.one_of(
        *[op.as_strategy(generation_mode=mode) for op in operations for mode in GenerationMode]  # valid and invalid
    )
    seen: dict[str, set[int]] = {}
    classes: dict[str, int] = {}

    @FUZZ_SETTINGS
    @given(case=strategy)
    def fuzz(case):
        resp = case.call(timeout=60)
        seen.setdefault(case.operation.label, set()).add(resp.status_code)
        classes[f"{resp.status_code // 100}xx"] = classes.get(f"{resp.status_code // 100}xx", 0) + 1
        assert resp.status_code < 500, (case.operation.label, resp.status_code, resp.text[:300], case.body)

    fuzz()
    assert len(seen) >= 10  # most routes were reached
    print(f"\nschema fuzz: {len(seen)} operations, status classes {dict(sorted(classes.items()))}")
    assert_still_serving(server, client, baseline_rss)


# ---- one hostile field in an otherwise valid body -------------------------------------------

HOSTILE = st.one_of(
    st.integers(min_value=-(2**200), max_value=2**200),
    st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**30, -1, 0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e-40, 1e-300, 5e-324, 1e308, -0.0]),
    st.text(alphabet=st.characters(exclude_categories=()), max_size=40),  # lone surrogates included
    st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u202e", "\ufeff", ""]),
    st.booleans(),
    st.none(),
    st.lists(st.integers(min_value=-(2**70), max_value=2**70), max_size=5),
    st.recursive(st.integers(0, 3), lambda inner: st.lists(inner, max_size=2), max_leaves=60),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def _fields(body, prefix=()):
    """Paths of every value in a body (``("messages", 0, "content")``...)."""
    yield prefix
    items = body.items() if isinstance(body, dict) else enumerate(body) if isinstance(body, list) else ()
    for key, value in items:
        yield from _fields(value, prefix + (key,))


def _replace(body, path, value):
    if not path:
        return value
    copy = json.loads(json.dumps(body))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


TARGETS = [(route, path) for route, body in VALID.items() for path in _fields(body)]
EXTRA_FIELDS = ["seed", "temperature", "top_p", "stop", "stream", "ignore_eos", "n", "logit_bias", "user"]


@FUZZ_SETTINGS
@given(
    target=st.sampled_from(TARGETS),
    extra=st.one_of(st.none(), st.sampled_from(EXTRA_FIELDS)),
    value=HOSTILE,
)
def _mutation_fuzz(client, target, extra, value):
    route, path = target
    body = VALID[route]
    if extra is not None and route.startswith("/openai"):
        body = {**body, extra: value}
    elif extra is not None:
        body = {**body, "parameters": {**body["parameters"], extra: value}}
    else:
        body = _replace(body, path, value)
    raw = json.dumps(body, allow_nan=True)  # NaN/Infinity literals and \ud800 escapes, as a hostile client sends
    if raw.count("[") > 60:  # hypothesis' recursive lists: keep some deep ones, cap the rest
        raw = raw[:4000]
    resp = client.post(route, content=raw, headers={"content-type": "application/json"})
    MUTATION_CLASSES[f"{resp.status_code // 100}xx"] = MUTATION_CLASSES.get(f"{resp.status_code // 100}xx", 0) + 1
    _assert_refusal(resp, (route, path, extra, raw[:200]))


MUTATION_CLASSES: dict[str, int] = {}


def test_one_hostile_field_per_request_gives_no_5xx(server, client, baseline_rss):
    _mutation_fuzz(client)
    print(f"\nmutation fuzz: status classes {dict(sorted(MUTATION_CLASSES.items()))}")
    assert_still_serving(server, client, baseline_rss)


# ---- named edge cases: status and the field and limit named ---------------------------------

DEEP = "[" * 5000 + "]" * 5000
BIG = "9" * 5000
V2 = f"/v2/models/{MODEL}/infer"
V1 = f"/v1/models/{MODEL}:predict"
CMPL, CHAT = "/openai/v1/completions", "/openai/v1/chat/completions"


def _v2(data='["hi"]', parameters='{"max_tokens": 2}') -> str:
    return f'{{"inputs": [{{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": {data}}}], ' \
           f'"parameters": {parameters}}}'  # fmt: skip


EDGE_CASES = [
    # (id, method, path, raw body, status, words the message must contain)
    ("deep-completions", "POST", CMPL, f'{{"model": "{MODEL}", "prompt": {DEEP}}}', 400, ["deeper than 32"]),
    ("deep-chat", "POST", CHAT, f'{{"model": "{MODEL}", "messages": {DEEP}}}', 400, ["deeper than 32"]),
    ("deep-v2", "POST", V2, f'{{"inputs": {DEEP}}}', 400, ["deeper than 32"]),
    ("deep-v1", "POST", V1, f'{{"instances": {DEEP}}}', 400, ["deeper than 32"]),
    ("bigint-max_tokens", "POST", CMPL, f'{{"model": "{MODEL}", "prompt": "hi", "max_tokens": {BIG}}}', 400,
     ["max_tokens", "5000 digits", "18446744073709551615"]),
    ("bigint-v1-seed", "POST", V1, f'{{"instances": ["hi"], "parameters": {{"seed": {BIG}}}}}', 400,
     ["parameters.seed", "5000 digits"]),
    ("bigint-prompt-ids", "POST", CMPL, f'{{"model": "{MODEL}", "prompt": [1, {BIG}]}}', 400, ["prompt.1"]),
    ("seed-2^64", "POST", CMPL, f'{{"model": "{MODEL}", "prompt": "hi", "seed": {2**64}, "max_tokens": 2}}', 400,
     ["seed", "18446744073709551615"]),
    ("seed-below-int64", "POST", CMPL, f'{{"model": "{MODEL}", "prompt": "hi", "seed": {-(2**63) - 1}}}', 400,
     ["seed", "-9223372036854775808"]),
    ("v2-seed-2^64", "POST", V2, _v2(parameters=f'{{"seed": {2**64}}}'), 400, ["parameters.seed"]),
    ("v2-seed-negative-2^64", "POST", V2, _v2(parameters=f'{{"seed": {-(2**64)}}}'), 400, ["parameters.seed"]),
    ("surrogate-prompt", "POST", CMPL, f'{{"model": "{MODEL}", "prompt": "a\\ud800b"}}', 400,
     ["prompt", "surrogate"]),
    ("surrogate-prompt-list", "POST", CMPL, f'{{"model": "{MODEL}", "prompt": ["\\udc00"]}}', 400, ["prompt.0"]),
    ("surrogate-chat", "POST", CHAT, f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "\\udfff"}}]}}',
     400, ["messages.0.content", "surrogate"]),
    ("surrogate-chat-part", "POST", CHAT,
     f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": [{{"type": "text", "text": "\\ud83d"}}]}}]}}',
     400, ["messages.0.content.0.text"]),
    ("surrogate-stop", "POST", CMPL, f'{{"model": "{MODEL}", "prompt": "hi", "stop": ["\\ud800"]}}', 400, ["stop"]),
    ("surrogate-v2-data", "POST", V2, _v2(data='["\\ud800"]'), 400, ["inputs.0.data.0", "surrogate"]),
    ("surrogate-v1", "POST", V1, '{"instances": ["\\ud800"]}', 400, ["instances.0"]),
    ("surrogate-key", "POST", CMPL, f'{{"model": "{MODEL}", "prompt": "hi", "\\ud800": 1}}', 400, ["surrogate"]),
    ("nan-temperature", "POST", CMPL, f'{{"model": "{MODEL}", "prompt": "hi", "temperature": NaN}}', 400,
     ["temperature", "NaN"]),
    ("inf-top_p", "POST", CMPL, f'{{"model": "{MODEL}", "prompt": "hi", "top_p": Infinity}}', 400, ["top_p"]),
    ("1e999-temperature", "POST", CMPL, f'{{"model": "{MODEL}", "prompt": "hi", "temperature": 1e999}}', 400,
     ["temperature", "finite"]),
    ("int-temperature-10^19", "POST", CMPL, f'{{"model": "{MODEL}", "prompt": "hi", "temperature": {10**19}}}', 400,
     ["temperature", "[0, 2]"]),
    ("v2-temperature-huge", "POST", V2, _v2(parameters=f'{{"temperature": {10**19}}}'), 400, ["temperature"]),
    ("prompt-over-char-limit", "POST", CMPL, json.dumps({"model": MODEL, "prompt": "a b " * 50_000}), 400,
     ["characters", "--max_prompt_chars"]),
    ("chat-over-char-limit", "POST", CHAT,
     json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x " * 50_000}]}), 400, ["--max_prompt_chars"]),
    ("v2-over-char-limit", "POST", V2, _v2(data=json.dumps(["a " * 50_000])), 400, ["--max_prompt_chars"]),
    ("body-over-limit-v2", "POST", V2, "x" * (2 << 20), 413, ["--max_body_bytes"]),
    ("body-over-limit-v1", "POST", V1, "x" * (2 << 20), 413, ["--max_body_bytes"]),
    ("body-over-limit-unknown-route", "POST", "/v2/nowhere", "x" * (2 << 20), 413, ["--max_body_bytes"]),
    ("versioned-ready-other", "GET", f"/v2/models/{MODEL}/versions/1/ready", None, 404, ["version '1'", VERSION]),
    ("versioned-infer-other", "POST", f"/v2/models/{MODEL}/versions/1/infer", _v2(), 404, ["version '1'"]),
    ("versioned-metadata-other", "GET", f"/v2/models/{MODEL}/versions/1", None, 404, ["version '1'"]),
    ("query-version-other", "GET", f"/v2/models/{MODEL}/ready?model_version=x", None, 404, ["version 'x'"]),
    ("unload-off", "POST", f"/v2/repository/models/{MODEL}/unload", None, 403, ["LLMOPS_REPOSITORY_TOKEN"]),
    ("load-off", "POST", f"/v2/repository/models/{MODEL}/load", None, 403, ["switched off"]),
    ("empty-body", "POST", CMPL, "", 400, ["empty"]),
    ("not-json", "POST", CHAT, "{nope", 400, ["not valid JSON"]),
    ("array-body", "POST", CMPL, "[1, 2]", 400, ["JSON object"]),
]


@pytest.mark.parametrize("case", EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_named_malformed_request_is_a_4xx_naming_the_field(server, client, case):
    name, method, path, raw, status, words = case
    headers = {"content-type": "application/json"}
    resp = client.request(method, path, content=raw.encode("utf-8") if raw is not None else None, headers=headers)
    assert resp.status_code == status, (name, resp.status_code, resp.text[:300])
    message = resp.json()["error"]["message"]
    for word in words:
        assert word in message, (name, message)


def test_served_version_routes_answer(client):
    assert client.get(f"/v2/models/{MODEL}/versions/{VERSION}/ready").json() == {"name": MODEL, "ready": True}
    resp = client.post(
        f"/v2/models/{MODEL}/versions/{VERSION}/infer", content=_v2(), headers={"content-type": "application/json"}
    )
    assert resp.status_code == 200 and resp.json()["outputs"][0]["name"] == "text_output"


def test_v2_binary_extension_size_mismatch_is_a_400(client):
    def post(sizes: list[int], payload: bytes):
        inputs = [
            {"name": f"text_input{i}", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": n}}
            for i, n in enumerate(sizes)
        ]
        head = json.dumps({"inputs": inputs, "parameters": {"max_tokens": 2}}).encode()
        return client.post(
            V2,
            content=head + payload,
            headers={"inference-header-content-length": str(len(head)), "content-type": "application/octet-stream"},
        )

    prompt = b"\x02\x00\x00\x00hi"  # KServe's BYTES element: 4-byte little-endian length, then the bytes
    over = post([100], prompt)
    assert over.status_code == 400 and "inputs.0.parameters.binary_data_size" in over.json()["error"]["message"]
    assert "only 6 bytes follow" in over.json()["error"]["message"]
    under = post([2], prompt)
    assert under.status_code == 400 and "must match" in under.json()["error"]["message"]
    negative = post([-1], prompt)
    assert negative.status_code == 400 and "non-negative" in negative.json()["error"]["message"]
    header = client.post(V2, content=b"{}", headers={"inference-header-content-length": "999"})
    assert header.status_code == 400 and "inference-header-content-length" in header.json()["error"]["message"]
    ok = post([6], prompt)
    assert ok.status_code == 200, ok.text


# ---- one bad row hurts nobody else ----------------------------------------------------------


def test_poisoned_parameters_fail_no_request_of_their_batch(server):
    """temperature 1e-40 and top_p 1e-300 decode alongside normal requests; all of them succeed."""
    base = {"model": MODEL, "prompt": "Q: add 1 and 2\nA:", "max_tokens": 24, "ignore_eos": True}
    poison = [{**base, "temperature": 1e-40}, {**base, "top_p": 1e-300, "temperature": 1.0},
              {**base, "temperature": 5e-324, "top_p": 5e-324}]  # fmt: skip
    normal = [{**base, "temperature": 0.8, "seed": i} for i in range(3)]

    async def run():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as c:

            async def stream(body):
                events = []
                async with c.stream("POST", CMPL, json={**body, "stream": True}) as resp:
                    assert resp.status_code == 200
                    async for line in resp.aiter_lines():
                        if line.startswith("data: "):
                            events.append(line[6:])
                return events

            plain = [c.post(CMPL, json=b) for b in poison + normal]
            streams = [stream(b) for b in poison + normal]
            return await asyncio.gather(*plain), await asyncio.gather(*streams)

    plain, streams = asyncio.run(run())
    assert [r.status_code for r in plain] == [200] * 6, [r.text[:200] for r in plain]
    assert all(r.json()["usage"]["completion_tokens"] == 24 for r in plain)
    for events in streams:
        assert events[-1] == "[DONE]" and not any('"error"' in e for e in events), events[-3:]
    log = server.log
    assert "generation step failed" not in log
