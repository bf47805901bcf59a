"""A small HTTP server exposing vLLM-format ``/metrics`` (vLLM cannot run here: it needs its own build).

The families, labels and buckets are those vLLM's ``PrometheusStatLogger`` registers
(``vllm/v1/metrics/loggers.py``, commit 005a810b: labels ``model_name``, ``engine``;
``vllm:request_success`` with ``finished_reason``; latency buckets 0.3..7680 s; TTFT buckets
0.001..2560 s), plus the ``http_requests_total{handler,method,status}`` counter that
prometheus-fastapi-instrumentator adds to vLLM's API server (statuses grouped as ``2xx``/``5xx``).
One :class:`VLLMPod` stands for one predictor pod; the test decides what it observes.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LABELS = ("model_name", "engine")
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
                   240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
FINISH_REASONS = ("stop", "length", "abort")  # vllm.v1.engine.FinishReason


@dataclass
class VLLMPod:
    """One vLLM server's metrics, on a real HTTP port."""

    model_name: str
    url: str
    success: Counter
    e2e: Histogram
    ttft: Histogram
    generation: Counter
    prompt: Counter
    http: Counter
    _server: object
    _thread: object

    def finished(self, latency_s: float, ttft_s: float, tokens: int, prompt_tokens: int = 16, reason: str = "length"):
        """A request vLLM's engine finished (what ``PrometheusStatLogger.record`` observes)."""
        self.success.labels(self.model_name, "0", reason).inc()
        self.e2e.labels(self.model_name, "0").observe(latency_s)
        self.ttft.labels(self.model_name, "0").observe(ttft_s)
        self.generation.labels(self.model_name, "0").inc(tokens)
        self.prompt.labels(self.model_name, "0").inc(prompt_tokens)
        self.http.labels("/v1/chat/completions", "POST", "2xx").inc()

    def failed(self):
        """A request the API server answered with a 5xx (the engine counts nothing)."""
        self.http.labels("/v1/chat/completions", "POST", "5xx").inc()

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_vllm_pod(model_name: str) -> VLLMPod:
    """Start one exposition on a free loopback port, every series at zero."""
    reg = CollectorRegistry()
    success = Counter("vllm:request_success", "Count of successfully processed requests.",
                      LABELS + ("finished_reason",), registry=reg)  # fmt: skip
    e2e = Histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                    LABELS, buckets=LATENCY_BUCKETS, registry=reg)  # fmt: skip
    ttft = Histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                     LABELS, buckets=TTFT_BUCKETS, registry=reg)  # fmt: skip
    generation = Counter("vllm:generation_tokens", "Number of generation tokens processed.", LABELS, registry=reg)
    prompt = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", LABELS, registry=reg)
    Gauge("vllm:num_requests_running", "Number of requests in model execution batches.", LABELS, registry=reg)
    http = Counter("http_requests", "Total number of requests by method, status and handler.",
                   ("handler", "method", "status"), registry=reg)  # fmt: skip
    for reason in FINISH_REASONS:
        success.labels(model_name, "0", reason)
    for series in (e2e, ttft, generation, prompt):
        series.labels(model_name, "0")
    for status in ("2xx", "5xx"):
        http.labels("/v1/chat/completions", "POST", status)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=reg)
    return VLLMPod(model_name, f"http://127.0.0.1:{server.server_port}", success, e2e, ttft, generation, prompt,
                   http, server, thread)  # fmt: skip
