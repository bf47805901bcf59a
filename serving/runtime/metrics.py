"""Prometheus metrics of the LLM model server (names and labels: ``METRICS.md``).

Registered once per process on prometheus_client's default registry, which KServe's
``/metrics`` endpoint exposes. Every series carries ``model_name`` and ``model_version``.
"""

from __future__ import annotations

from contextvars import ContextVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from serving.runtime.engine import EngineObserver

# 1 ms .. 60 s, roughly x2.5 per step.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
LABELS = ("model_name", "model_version")

_FAMILIES: dict[int, dict] = {}
# set by the server's middleware for the request being answered: a rollout probe (``PROBE_HEADER``)
PROBE_REQUEST: ContextVar[bool] = ContextVar("llmops_probe_request", default=False)


def _families(registry: CollectorRegistry) -> dict:
    """Create the metric families once per registry (prometheus_client refuses duplicates)."""
    key = id(registry)
    if key not in _FAMILIES:
        _FAMILIES[key] = {
            "requests": Counter(
                "llmops_requests_total",
                "Inference requests answered (OpenAI and V2), by HTTP status code.",
                LABELS + ("code",),
                registry=registry,
            ),
            "probes": Counter(
                "llmops_probe_requests_total",
                "Rollout quality probes answered (x-llmops-probe), by HTTP status code; not in the other request series.",
                LABELS + ("code",),
                registry=registry,
            ),
            "duration": Histogram(
                "llmops_request_duration_seconds",
                "End-to-end request duration, until the last byte of the response (streams included).",
                LABELS,
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            "ttft": Histogram(
                "llmops_time_to_first_token_seconds",
                "Time from queueing a request to its first generated token.",
                LABELS,
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            "generated": Counter(
                "llmops_generated_tokens_total", "Tokens generated.", LABELS, registry=registry
            ),
            "prompt": Counter("llmops_prompt_tokens_total", "Prompt tokens processed.", LABELS, registry=registry),
            "queue": Gauge(
                "llmops_queue_depth", "Requests waiting for a batch slot.", LABELS, registry=registry
            ),
            "batch": Histogram(
                "llmops_batch_size",
                "Sequences per forward pass of the generation worker.",
                LABELS,
                buckets=BATCH_BUCKETS,
                registry=registry,
            ),
            "inflight": Gauge(
                "llmops_inflight_requests", "Inference requests being answered right now.", LABELS, registry=registry
            ),
        }
    return _FAMILIES[key]


class RuntimeMetrics(EngineObserver):
    """The metrics of one served model version.

    Args:
        model_name: value of the ``model_name`` label.
        model_version: value of the ``model_version`` label.
        registry: where to register (default: prometheus_client's default registry).
    """

    def __init__(self, model_name: str, model_version: str, registry: CollectorRegistry = REGISTRY):
        fam = _families(registry)
        labels = {"model_name": model_name, "model_version": model_version}
        self._labels = labels
        self._requests = fam["requests"]
        self._probes = fam["probes"]
        self._duration = fam["duration"].labels(**labels)
        self._ttft = fam["ttft"].labels(**labels)
        self._generated = fam["generated"].labels(**labels)
        self._prompt = fam["prompt"].labels(**labels)
        self._queue = fam["queue"].labels(**labels)
        self._batch = fam["batch"].labels(**labels)
        self.inflight = fam["inflight"].labels(**labels)
        # Make the zero-valued series visible before the first request.
        self._queue.set(0)
        self.inflight.set(0)

    def request(self, code: int | str, seconds: float, probe: bool = False) -> None:
        """Count one answered request and its end-to-end duration (a rollout probe: in its own counter only)."""
        if probe:
            self._probes.labels(**self._labels, code=str(code)).inc()
            return
        self._requests.labels(**self._labels, code=str(code)).inc()
        self._duration.observe(seconds)

    def queue_depth(self, depth: int) -> None:  # noqa: D102
        self._queue.set(depth)

    def batch_size(self, rows: int) -> None:  # noqa: D102
        self._batch.observe(rows)

    def first_token(self, seconds: float) -> None:  # noqa: D102
        self._ttft.observe(seconds)

    def prompt_tokens(self, n: int) -> None:  # noqa: D102
        self._prompt.inc(n)

    def generated_tokens(self, n: int) -> None:  # noqa: D102
        self._generated.inc(n)
