"""A real prometheus_client exporter serving the model server's metric names (for tests).

Until a model-server test helper exists, the providers are tested against this
exporter: same metric names, labels and histogram layout as the contract in the
model server, with observations the test controls, served over real HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# the names and labels the model server exports (fixed contract)
LABELS = ("model_name", "model_version")


@dataclass
class Exporter:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    ttft: Histogram
    generated: Counter
    url: str
    _server: object
    _thread: object

    def serve(self, name: str, version: str, code: str, latency_s: float, ttft_s: float | None, tokens: int = 0):
        """Record one answered request the way the model server does."""
        self.requests.labels(name, version, code).inc()
        self.latency.labels(name, version).observe(latency_s)
        if ttft_s is not None:
            self.ttft.labels(name, version).observe(ttft_s)
        if tokens:
            self.generated.labels(name, version).inc(tokens)

    def init(self, name: str, version: str, codes=("200", "500")):
        """Create the label children at zero (what a server does before its first request)."""
        for code in codes:
            self.requests.labels(name, version, code)
        self.latency.labels(name, version)
        self.ttft.labels(name, version)
        self.generated.labels(name, version)

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_exporter(port: int = 0) -> Exporter:
    reg = CollectorRegistry()
    requests = Counter("llmops_requests", "Requests answered", LABELS + ("code",), registry=reg)
    latency = Histogram("llmops_request_duration_seconds", "End-to-end latency", LABELS, registry=reg)
    ttft = Histogram("llmops_time_to_first_token_seconds", "Time to first token", LABELS, registry=reg)
    generated = Counter("llmops_generated_tokens", "Generated tokens", LABELS, registry=reg)
    Counter("llmops_prompt_tokens", "Prompt tokens", LABELS, registry=reg)
    Gauge("llmops_queue_depth", "Queued requests", LABELS, registry=reg)
    Gauge("llmops_inflight_requests", "In-flight requests", LABELS, registry=reg)
    Histogram("llmops_batch_size", "Batch size", LABELS, registry=reg, buckets=(1, 2, 4, 8, 16, 32))
    server, thread = start_http_server(port, addr="127.0.0.1", registry=reg)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    return Exporter(reg, requests, latency, ttft, generated, url, server, thread)
