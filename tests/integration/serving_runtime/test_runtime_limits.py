"""Limits a user notices: 429 past the queue bound with bounded memory, timeouts, SIGTERM drain, test faults."""

from __future__ import annotations

import asyncio
import signal
import threading
import time

import httpx
import psutil
import pytest

from tests.integration.serving_runtime.conftest import MODEL, metric, scrape
from tests.support.model_server import running_model_server

pytestmark = pytest.mark.integration

LONG = {"model": MODEL, "prompt": "Q: add 1 and 2\nA:", "max_tokens": 100, "ignore_eos": True, "temperature": 0}


async def _blast(url: str, n: int, body: dict, on_tick=None) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=n)) as client:
        tasks = [asyncio.create_task(client.post("/openai/v1/completions", json=body)) for _ in range(n)]
        while not all(t.done() for t in tasks):
            if on_tick:
                on_tick()
            await asyncio.sleep(0.05)
        return [t.result() for t in tasks]


def test_overload_answers_429_with_retry_after_and_memory_stays_bounded(tiny_model):
    with running_model_server(
        tiny_model, model_name=MODEL, args=["--torch_threads", "1", "--max_queue", "4", "--max_batch_size", "2"]
    ) as server:
        proc = psutil.Process(server.process.pid)
        start_rss = proc.memory_info().rss
        peak = [start_rss]

        def sample():
            peak[0] = max(peak[0], proc.memory_info().rss)

        results = []
        for _ in range(3):  # three waves: memory must not grow wave over wave
            results += asyncio.run(_blast(server.url, 40, LONG, on_tick=sample))
        codes = [r.status_code for r in results]
        refused = [r for r in results if r.status_code == 429]
        assert set(codes) <= {200, 429}
        assert len(refused) >= 60  # 40 at once against 2 running + 4 waiting: most are refused
        assert codes.count(200) >= 18
        for r in refused[:5]:
            assert int(r.headers["retry-after"]) >= 1
            err = r.json()["error"]
            assert err["type"] == "rate_limit_error" and "--max_queue 4" in err["message"]
        assert all(r.json()["usage"]["completion_tokens"] == 100 for r in results if r.status_code == 200)
        samples = scrape(server.url)
        assert metric(samples, "llmops_requests_total", code="429") == len(refused)
        # Bounded: the queue holds at most 4 prompts; 120 requests add no more than a small, fixed margin.
        assert peak[0] - start_rss < 200 * 2**20, (start_rss, peak[0])
        assert httpx.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200


def test_request_over_the_timeout_gets_504(tiny_model):
    with running_model_server(
        tiny_model,
        model_name=MODEL,
        args=["--torch_threads", "1", "--max_batch_size", "1", "--request_timeout_s", "0.5"],
    ) as server:
        results = asyncio.run(_blast(server.url, 6, dict(LONG, max_tokens=110)))
        timed_out = [r for r in results if r.status_code == 504]
        assert timed_out, [r.status_code for r in results]
        assert {r.status_code for r in results} <= {200, 504}
        err = timed_out[0].json()["error"]
        assert err["type"] == "timeout_error" and "--request_timeout_s" in err["message"]
        ok = httpx.post(f"{server.url}/openai/v1/completions", json=dict(LONG, max_tokens=3), timeout=30)
        assert ok.status_code == 200


def test_sigterm_refuses_new_connections_finishes_in_flight_and_exits(tiny_model):
    with running_model_server(
        tiny_model, model_name=MODEL, args=["--torch_threads", "1", "--fault_latency_ms", "2500"]
    ) as server:
        answer = {}

        def in_flight():
            answer["resp"] = httpx.post(f"{server.url}/openai/v1/completions", json=dict(LONG, max_tokens=20), timeout=60)

        thread = threading.Thread(target=in_flight)
        thread.start()
        deadline = time.monotonic() + 20
        while metric(scrape(server.url), "llmops_inflight_requests") < 1:
            assert time.monotonic() < deadline, "the request never became in-flight"
            time.sleep(0.05)
        server.process.send_signal(signal.SIGTERM)
        refused = False
        for _ in range(40):  # new connections are refused while the old request is still being answered
            try:
                httpx.get(f"{server.url}/v2/health/ready", timeout=1)
            except httpx.TransportError:
                refused = True
                break
            time.sleep(0.05)
        thread.join(60)
        assert refused
        assert "resp" in answer and answer["resp"].status_code == 200
        assert answer["resp"].json()["usage"]["completion_tokens"] == 20
        assert server.process.wait(30) == 0, server.log[-3000:]


def test_fault_injection_answers_500_for_a_share_and_adds_latency(tiny_model):
    with running_model_server(
        tiny_model,
        model_name=MODEL,
        args=["--torch_threads", "1", "--fault_error_rate", "0.5", "--fault_seed", "3", "--fault_latency_ms", "200"],
    ) as server:
        results = []
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for _ in range(20):
                t0 = time.monotonic()
                resp = client.post("/openai/v1/completions", json=dict(LONG, max_tokens=2))
                results.append((resp, time.monotonic() - t0))
            health = client.get("/v2/health/ready")
        failed = [r for r, _ in results if r.status_code == 500]
        assert 3 <= len(failed) <= 17
        assert {r.status_code for r, _ in results} == {200, 500}
        assert failed[0].json()["error"]["code"] == "injected_fault"
        assert all(elapsed >= 0.2 for _, elapsed in results)
        assert health.status_code == 200  # faults touch inference routes only
        samples = scrape(server.url)
        assert metric(samples, "llmops_requests_total", code="500") == len(failed)
