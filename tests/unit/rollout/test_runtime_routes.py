"""The golden-prompt probe, the load generator and the judge's probes call each runtime's own OpenAI routes.

vLLM's own server (KServe's kserve-vllmserver runs ``vllm.entrypoints.openai.api_server``)
answers at ``/v1``; ours and huggingfaceserver at ``/openai/v1``. vLLM cannot run here, so
its side is an HTTP server that answers OpenAI completions only at ``/v1`` and 404s elsewhere.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from serving.isvc import RUNTIME_PROFILES, ServingRuntimeKind
from serving.rollout.loadgen import LoadGenerator, probe_split, send_probes
from serving.rollout.quality import GoldenPrompt, probe


@pytest.fixture()
def openai_at_v1():
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            paths.append(self.path)
            if self.path != "/v1/completions":
                self.send_response(404)
                self.end_headers()
                return
            out = json.dumps({"id": "c", "object": "text_completion", "created": 0, "model": body["model"],
                              "choices": [{"index": 0, "text": "4", "finish_reason": "stop", "logprobs": None}],
                              "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", paths
    finally:
        server.shutdown()


def test_the_runtimes_name_their_routes():
    assert RUNTIME_PROFILES[ServingRuntimeKind.VLLM].openai_base == "/v1"
    assert RUNTIME_PROFILES[ServingRuntimeKind.LLMOPS].openai_base == "/openai/v1"
    assert RUNTIME_PROFILES[ServingRuntimeKind.HUGGINGFACE].openai_base == "/openai/v1"


def test_probe_load_and_judge_probes_reach_vllms_routes(openai_at_v1):
    url, paths = openai_at_v1
    base = RUNTIME_PROFILES[ServingRuntimeKind.VLLM].openai_base
    result = probe(url, url, [GoldenPrompt("2+2=", "4")], model="llm", openai_base=base)
    assert result.canary_score == 1.0 and result.stable_score == 1.0
    assert send_probes(url, url, "llm", ["2+2="], 2, openai_base=base) == 4  # 2 to each arm
    assert send_probes(url, url, "llm", ["2+2="], 1, 9, openai_base=base) == 10  # stable's share of a 10 % split
    with LoadGenerator(url, "llm", ["2+2="], rps=50, openai_base=base) as gen:
        deadline = time.monotonic() + 10
        while gen.status.get("200", 0) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert gen.status.get("200", 0) >= 3, gen.status
    assert set(paths) == {"/v1/completions"}


def test_the_default_routes_miss_vllm(openai_at_v1):
    """Without the runtime's base the probe would call /openai/v1 and fail: the route choice matters."""
    from serving.rollout.quality import QualityProbeError

    url, paths = openai_at_v1
    with pytest.raises(QualityProbeError):
        probe(url, None, [GoldenPrompt("2+2=", "4")], model="llm")
    assert paths == ["/openai/v1/completions"]


@pytest.mark.parametrize(("n", "weight", "stable_n"), [
    (10, 10, 90),  # a 10 % canary: stable takes 9 for each canary probe, as it takes 9 of 10 user requests
    (10, 50, 10),
    (12, 75, 4),
    (3, 95, 1),  # at least one: stable's sample still gets probes
    (10, 100, 10),  # no split to follow (the bake, 100 %): the same to both
    (0, 10, 0),
])  # fmt: skip
def test_probes_follow_the_traffic_split(n, weight, stable_n):
    assert probe_split(n, weight) == stable_n
