"""Chaos: kill -9 a revision's real model server under load, behind the local router at a 50/50 split.

Measured (printed; run with ``-s``): the share of failed requests from the kill until the
restarted revision answers again, and that time to recovery. The router retries refused
connections on the other revision, and requests cut before their answer (inference has no
side effects), and ejects the dead one; the router's supervisor restarts it with backoff
and the routes take it back once it is ready.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import psutil
import pytest

from serving.backends.local import LocalBackend
from serving.isvc import PredictorSpec, ServiceSpec, render_isvc

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NS, NAME = "default", "chaos"
CLIENTS = 4
PAUSE_S = 0.05  # between one client's requests: load without starving the restart of CPU
READY_S = 240


def _isvc(model, version, canary=None):
    spec = ServiceSpec(name=NAME, predictor=PredictorSpec(storage_uri=str(model), model_version=version))
    return render_isvc(spec, canary)


@pytest.fixture
def backend(tmp_path):
    b = LocalBackend(tmp_path / "state", restart_backoff_s=1.0, stop_timeout_s=5.0)
    yield b
    for ns, name in b.services():
        b.delete(name, ns)


def test_killed_revision_under_load_recovers_with_few_failures(backend, micro_model):
    backend.apply(_isvc(micro_model, "1"))
    assert _ready(backend.wait_ready(NAME, NS, READY_S))
    backend.apply(_isvc(micro_model, "2", canary=50))
    assert _ready(backend.wait_ready(NAME, NS, READY_S))
    url = backend.endpoints(NAME, NS).url
    victim = "chaos-predictor-00002"
    shell = psutil.Process(backend.pids(NAME, NS)[victim])
    server_pid = shell.children()[0].pid
    body = {"model": NAME, "prompt": "Q: add 1 and 2\nA:", "max_tokens": 4, "temperature": 0}
    log: list[tuple[float, int, str | None, float]] = []  # (finished at, status, revision, started at)
    killed_at: list[float] = []

    async def client(c: httpx.AsyncClient, stop: asyncio.Event):
        while not stop.is_set():
            start = time.monotonic()
            try:
                r = await c.post("/openai/v1/completions", json=body)
                log.append((time.monotonic(), r.status_code, r.headers.get("x-llmops-revision"), start))
            except httpx.HTTPError:
                log.append((time.monotonic(), 0, None, start))
            await asyncio.sleep(PAUSE_S)

    async def scenario():
        stop = asyncio.Event()
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            tasks = [asyncio.create_task(client(c, stop)) for _ in range(CLIENTS)]
            await asyncio.sleep(3)  # steady state
            os.kill(server_pid, signal.SIGKILL)
            killed_at.append(time.monotonic())
            deadline = killed_at[0] + READY_S
            while time.monotonic() < deadline:  # until the restarted revision answers again, then 2 s more
                back = _answered_by(log, victim, killed_at[0])
                if back and time.monotonic() > back[0] + 2:
                    break
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.gather(*tasks)

    asyncio.run(scenario())
    kill = killed_at[0]
    before = [e for e in log if e[0] <= kill]
    back_at = _answered_by(log, victim, kill)[0]
    window = [e for e in log if kill < e[0] <= back_at]
    failed = [e for e in window if e[1] != 200]
    after = [e for e in log if e[0] > back_at]
    share = len(failed) / max(len(window), 1)
    print(
        f"\nchaos: {len(before)} requests before the kill ({sum(e[2] == victim for e in before)} on {victim}); "
        f"kill -> revision back in {back_at - kill:.1f}s; {len(failed)}/{len(window)} failed in that window "
        f"({share:.1%}, codes {sorted({e[1] for e in failed})}); after: {len(after)} requests, "
        f"{sum(e[2] == victim for e in after)} on {victim}, {sum(e[1] != 200 for e in after)} failed"
    )
    assert all(e[1] == 200 for e in before)
    assert not failed  # refused and cut requests were retried on the other revision
    assert all(e[1] == 200 for e in after)
    assert any(e[2] == victim for e in after)  # re-admitted: it takes its share again
    obj = backend.get(NAME, NS)
    assert _ready(obj)
    assert backend.pids(NAME, NS)[victim] != shell.pid  # a new process


def _answered_by(log, revision: str, since: float) -> list[float]:
    """When requests sent after ``since`` were answered by ``revision`` (the restarted server)."""
    return sorted(end for end, code, rev, start in log if start > since and code == 200 and rev == revision)


def _ready(obj) -> bool:
    return {c["type"]: c["status"] for c in obj["status"]["conditions"]}.get("Ready") == "True"
