"""The local router under faults: ejection, retry, supervision, cut streams, streamed bodies."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

import httpx
import psutil

from serving.backends.router import OutlierDetector, Target, WeightedPicker

from .conftest import isvc, make_model

NS = "default"


def _server_pid(b, name: str, revision: str) -> int:
    """The model server process itself (under the launcher shell that records its exit status)."""
    shell = psutil.Process(b.pids(name, NS)[revision])
    children = shell.children()
    return children[0].pid if children else shell.pid


def _router_health(url: str) -> dict:
    return httpx.get(url + "/_router/health", timeout=5).json()


def test_detector_ejects_after_consecutive_failures_and_readmits_with_growing_ejections():
    now = [0.0]
    det = OutlierDetector(consecutive_failures=3, base_ejection_s=5.0, max_ejection_s=12.0, clock=lambda: now[0])
    a, b = Target("a", 50, "http://a"), Target("b", 50, "http://b")
    picker = WeightedPicker([a, b])

    def picks(n: int) -> Counter:
        return Counter(picker.pick(lambda t: not det.ejected(t)).revision for _ in range(n))

    assert picks(10) == {"a": 5, "b": 5}
    det.failure(b)
    det.failure(b)
    det.success(b)  # a success in between resets the count
    det.failure(b)
    det.failure(b)
    assert not det.ejected(b)
    det.failure(b)
    assert det.ejected(b)
    assert picks(10) == {"a": 10}  # b's share goes to the ready revision
    now[0] += 5.1
    assert not det.ejected(b) and picks(10) == {"a": 5, "b": 5}
    for _ in range(3):
        det.failure(b)
    assert det.report()["b"]["ejections"] == 2 and det.report()["b"]["ejected_for_s"] == 10.0
    now[0] += 9.9
    assert det.ejected(b)  # second ejection lasts 2 x base
    for _ in range(3):
        now[0] += 11
        det.failure(b), det.failure(b), det.failure(b)
    assert det.report()["b"]["ejected_for_s"] == 12.0  # capped


def test_killed_revision_retried_ejected_restarted_and_readmitted(backends, tmp_path):
    b = backends(restart_backoff_s=1.0)
    b.apply(isvc("chaos", make_model(tmp_path / "m1"), "1"))
    b.wait_ready("chaos", NS, 60)
    b.apply(isvc("chaos", make_model(tmp_path / "m2"), "2", canary=50))
    b.wait_ready("chaos", NS, 60)
    url = b.endpoints("chaos", NS).url
    with httpx.Client(base_url=url, timeout=10) as client:
        assert Counter(client.post("/openai/v1/completions", json={}).json()["model_version"] for _ in range(20)) == {
            "1": 10,
            "2": 10,
        }
        old_port = next(t["url"] for t in _router_health(url)["routes"]["targets"] if t["revision"].endswith("00002"))
        os.kill(_server_pid(b, "chaos", "chaos-predictor-00002"), signal.SIGKILL)
        # Refused connections are retried on revision 1: the client sees no error at all.
        codes = [client.post("/openai/v1/completions", json={}).status_code for _ in range(30)]
        assert codes == [200] * 30
        # Nobody calls the backend: the router's supervisor restarts revision 2 and puts it back.
        deadline = time.monotonic() + 30
        while True:
            targets = {t["revision"]: t for t in _router_health(url)["routes"]["targets"]}
            new = targets["chaos-predictor-00002"]["url"]
            if new and new != old_port:
                break
            assert time.monotonic() < deadline, targets
            time.sleep(0.2)
        seen = Counter(client.post("/openai/v1/completions", json={}).json()["model_version"] for _ in range(20))
    assert seen == {"1": 10, "2": 10}
    rev = b.get("chaos", NS)
    assert {c["type"]: c["status"] for c in rev["status"]["conditions"]}["Ready"] == "True"


def test_reapplying_the_same_spec_restarts_a_crashed_revision(backends, tmp_path):
    b = backends(supervise=False)
    model = make_model(tmp_path / "m")
    b.apply(isvc("again", model, "1"))
    b.wait_ready("again", NS, 60)
    os.kill(_server_pid(b, "again", "again-predictor-00001"), signal.SIGKILL)
    time.sleep(0.3)
    obj = b.get("again", NS)
    assert "restarting in 1s (restart 1)" in obj["status"]["conditions"][1]["message"]
    b.apply(isvc("again", model, "1"))
    obj = b.wait_ready("again", NS, 60)
    assert {c["type"]: c["status"] for c in obj["status"]["conditions"]}["Ready"] == "True"


def test_stream_cut_midway_ends_with_an_sse_error_event(backends, tmp_path):
    b = backends(supervise=False)
    b.apply(isvc("cut", make_model(tmp_path / "m"), "1"))
    b.wait_ready("cut", NS, 60)
    url = b.endpoints("cut", NS).url
    events = []
    with httpx.stream("POST", url + "/openai/v1/completions", json={"stream": True}, timeout=10) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
                if len(events) == 1:
                    os.kill(_server_pid(b, "cut", "cut-predictor-00001"), signal.SIGKILL)
    assert events[0]["i"] == 0
    assert events[-1]["error"]["code"] == "upstream_stream_broken"
    assert "cut-predictor-00001 broke the stream" in events[-1]["error"]["message"]


def test_request_bodies_stream_through_without_buffering(backends, tmp_path):
    b = backends(supervise=False)
    b.apply(isvc("big", make_model(tmp_path / "m"), "1"))
    b.wait_ready("big", NS, 60)
    url = b.endpoints("big", NS).url
    router = psutil.Process(b.pids("big", NS)["router"])
    before = router.memory_info().rss
    peak = [before]
    size = 50 * 2**20

    def body():
        chunk = b"x" * 2**20
        for _ in range(size // len(chunk)):
            peak[0] = max(peak[0], router.memory_info().rss)
            yield chunk

    resp = httpx.post(url + "/upload", content=body(), timeout=60)
    assert resp.status_code == 200 and resp.json()["bytes"] == size
    after = router.memory_info().rss
    # The old router held the whole body (+52 MiB); streaming keeps one retry buffer and a few chunks.
    assert peak[0] - before < 20 * 2**20, (before, peak[0])
    assert after - before < 20 * 2**20, (before, after)


def test_all_revisions_down_gives_502_naming_them(backends, tmp_path):
    b = backends(supervise=False)
    b.apply(isvc("down", make_model(tmp_path / "m"), "1"))
    b.wait_ready("down", NS, 60)
    os.kill(_server_pid(b, "down", "down-predictor-00001"), signal.SIGKILL)
    resp = httpx.get(b.endpoints("down", NS).url + "/v2/health/ready", timeout=10)
    assert resp.status_code == 502
    assert "down-predictor-00001" in resp.json()["error"]["message"]
