"""One client must not hurt the others: huge bodies, abandoned requests, the model-repository control routes."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from tests.integration.serving_runtime.conftest import MODEL, metric, scrape
from tests.support.model_server import running_model_server

pytestmark = pytest.mark.integration

TOKEN = "t0ken-for-the-control-routes-test"
VALID = {"model": MODEL, "prompt": "Q: add 1 and 2\nA:", "max_tokens": 3}


@pytest.fixture(scope="module")
def guarded(tiny_model):
    """Two running rows and four waiting (six admission slots), control routes behind a token."""
    with running_model_server(
        tiny_model,
        model_name=MODEL,
        args=["--torch_threads", "1", "--max_batch_size", "2", "--max_queue", "4"],
        env={"LLMOPS_REPOSITORY_TOKEN": TOKEN},
    ) as running:
        yield running


def test_ten_mib_requests_are_refused_early_and_delay_nobody(guarded):
    proc = psutil.Process(guarded.process.pid)
    with httpx.Client(base_url=guarded.url, timeout=60) as c:
        assert c.post("/openai/v1/completions", json=VALID).status_code == 200
    before = proc.memory_info().rss
    ten_mib = 10 * 2**20
    prompt = json.dumps({"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES",
                                     "data": ["x" * ten_mib]}]}).encode()  # fmt: skip

    async def scenario():
        async with httpx.AsyncClient(base_url=guarded.url, timeout=60) as c:
            probes: list[tuple[int, float]] = []
            done = asyncio.Event()

            async def probe():
                while not done.is_set():
                    t0 = time.monotonic()
                    r = await c.get("/v2/health/ready")
                    probes.append((r.status_code, time.monotonic() - t0))
                    await asyncio.sleep(0.02)

            async def chunked(body: bytes):
                for i in range(0, len(body), 2**20):
                    yield body[i : i + 2**20]

            prober = asyncio.create_task(probe())
            await asyncio.sleep(0.1)
            t0 = time.monotonic()
            big = await asyncio.gather(
                c.post(f"/v2/models/{MODEL}/infer", content=prompt, headers={"content-type": "application/json"}),
                c.post("/openai/v1/completions", content=chunked(prompt)),  # no Content-Length: read up to the limit
                c.post(f"/v1/models/{MODEL}:predict", content=chunked(prompt)),
                c.post("/openai/v1/completions", json={**VALID, "prompt": "a b " * 200_000}),  # 800 KiB, under the body limit
                c.post("/openai/v1/completions", json=VALID),
            )
            refused_in = time.monotonic() - t0
            done.set()
            await prober
            return big, probes, refused_in

    big, probes, refused_in = asyncio.run(scenario())
    after = proc.memory_info().rss
    assert [r.status_code for r in big] == [413, 413, 413, 400, 200], [r.text[:200] for r in big]
    assert "--max_body_bytes" in big[0].json()["error"]["message"]
    assert "--max_prompt_chars" in big[3].json()["error"]["message"]
    assert probes and all(code == 200 for code, _ in probes)
    print(
        f"\n10 MiB requests: refused in {refused_in:.3f}s; health probes during: {len(probes)}, "
        f"slowest {max(s for _, s in probes) * 1000:.0f} ms; RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MiB"
    )
    assert after - before < 40 * 2**20, (before, after)


def _abandon(url: str, body: dict) -> None:
    """Send a request and close the socket at once, as a client that gave up."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    data = json.dumps(body).encode()
    with socket.create_connection((host, port)) as s:
        s.sendall(
            b"POST /openai/v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(data)}\r\n\r\n".encode()
            + data
        )


def test_abandoned_non_streaming_requests_free_their_slots(guarded):
    long = {**VALID, "max_tokens": 100, "ignore_eos": True, "temperature": 0}
    generated = metric(scrape(guarded.url), "llmops_generated_tokens_total")
    for _ in range(6):  # every admission slot (2 running + 4 waiting)
        _abandon(guarded.url, long)
    time.sleep(0.5)
    with httpx.Client(base_url=guarded.url, timeout=60) as c:
        resp = c.post("/openai/v1/completions", json=VALID)
        assert resp.status_code == 200, resp.text  # not 429: the abandoned requests left
        time.sleep(0.5)
        spent = metric(scrape(guarded.url), "llmops_generated_tokens_total") - generated - 3
    # Without cancellation the six would generate 600 tokens for nobody.
    assert spent < 200, spent
    assert 'code="499"' in httpx.get(f"{guarded.url}/metrics", timeout=10).text


def test_control_routes_need_the_token_and_unload_makes_the_server_not_ready(guarded):
    unload = f"{guarded.url}/v2/repository/models/{MODEL}/unload"
    anonymous = httpx.post(unload, timeout=30)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    assert "LLMOPS_REPOSITORY_TOKEN" in anonymous.json()["error"]["message"]
    wrong = httpx.post(unload, headers={"authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401
    assert TOKEN not in guarded.log  # the token is never logged
    ok = httpx.post(unload, headers={"authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert ok.status_code == 200, ok.text
    ready = httpx.get(f"{guarded.url}/v2/health/ready", timeout=10)
    assert ready.status_code == 503  # nothing can serve: the replica reads not ready and gets replaced
    after = httpx.post(f"{guarded.url}/openai/v1/completions", json=VALID, timeout=30)
    assert after.status_code == 503 and after.json()["error"]["code"] == "shutting_down"
