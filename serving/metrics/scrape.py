"""``scrape`` provider: read the revision's model servers' ``/metrics`` directly.

For one machine (the ``local`` backend) or a cluster without Prometheus. Each
:meth:`ScrapeProvider.collect` reads ``<url>/metrics`` of every server of the
revision (the backend resolves them from the target's ``revision``, so two
revisions of one version are two arms), keeps the samples whose
``model_name``/``model_version`` labels match the target (and ``revision`` /
``pod`` where the exposition carries them), adds them up across servers, and
returns the difference from the previous snapshot it took for the same target.

The provider is therefore stateful, and ``start``/``end`` mean "since the last
snapshot": the window reported is ``[previous snapshot time, now]``.

* The **first** collect for a target (or :meth:`prime`) only establishes the
  baseline: it returns an empty window (``requests == 0``, which the analysis
  treats as INCONCLUSIVE, never as a pass). Call :meth:`prime` when a step
  starts so the first real collect covers the step.
* A counter that went down (a server restarted) resets the baseline to zero,
  as PromQL's ``increase`` does.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import httpx

from serving.metrics.base import Histogram, MetricsProvider, MetricsTarget, MetricsUnavailable, RevisionMetrics

log = logging.getLogger(__name__)

REQUESTS = "llmops_requests_total"
LATENCY = "llmops_request_duration_seconds"
TTFT = "llmops_time_to_first_token_seconds"
GENERATED = "llmops_generated_tokens_total"


def is_server_error(code: str) -> bool:
    """5xx (timeouts included) are the server's fault; 4xx are the client's."""
    try:
        return 500 <= int(code) <= 599
    except (TypeError, ValueError):
        return False


@dataclass
class Snapshot:
    """Cumulative counters of one revision at one moment (summed over its servers)."""

    at: float
    by_code: dict[str, float] = field(default_factory=dict)
    latency: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    latency_sum: float = 0.0
    ttft: dict[float, float] = field(default_factory=dict)
    ttft_sum: float = 0.0
    generated: float = 0.0

    def histogram(self, which: str) -> Histogram:
        buckets = self.latency if which == "latency" else self.ttft
        total = self.latency_sum if which == "latency" else self.ttft_sum
        return Histogram(tuple(sorted(buckets.items())), total)

    def went_down_from(self, earlier: "Snapshot") -> bool:
        """True when any counter is below its earlier value (a server restarted)."""
        if sum(self.by_code.values()) < sum(earlier.by_code.values()):
            return True
        return any(self.by_code.get(k, 0.0) < v for k, v in earlier.by_code.items())


def parse_metrics(text: str, target: MetricsTarget, at: float) -> Snapshot:
    """Pick the target's samples out of one Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    snap = Snapshot(at=at)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = s.labels
            if labels.get("model_name") != target.model_name or labels.get("model_version") != target.model_version:
                continue
            if target.revision and "revision" in labels and labels["revision"] != target.revision:
                continue  # a federated or relabelled exposition names the revision: keep only this arm's
            if target.pods and "pod" in labels and labels["pod"] not in target.pods:
                continue
            if s.name == REQUESTS:
                code = labels.get("code", "")
                snap.by_code[code] = snap.by_code.get(code, 0.0) + s.value
            elif s.name == GENERATED:
                snap.generated += s.value
            elif s.name in (f"{LATENCY}_bucket", f"{TTFT}_bucket"):
                le = float(labels["le"])
                buckets = snap.latency if s.name.startswith(LATENCY) else snap.ttft
                buckets[le] = buckets.get(le, 0.0) + s.value
            elif s.name == f"{LATENCY}_sum":
                snap.latency_sum += s.value
            elif s.name == f"{TTFT}_sum":
                snap.ttft_sum += s.value
    return snap


def _merge(a: Snapshot, b: Snapshot) -> Snapshot:
    out = Snapshot(at=max(a.at, b.at))
    for src in (a, b):
        for k, v in src.by_code.items():
            out.by_code[k] = out.by_code.get(k, 0.0) + v
        for k, v in src.latency.items():
            out.latency[k] = out.latency.get(k, 0.0) + v
        for k, v in src.ttft.items():
            out.ttft[k] = out.ttft.get(k, 0.0) + v
        out.latency_sum += src.latency_sum
        out.ttft_sum += src.ttft_sum
        out.generated += src.generated
    return out


class ScrapeProvider(MetricsProvider):
    """Reads ``/metrics`` of each server in ``target.urls``; see the module docstring."""

    def __init__(
        self,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.time,
        client: httpx.Client | None = None,
    ) -> None:
        """
        Args:
            timeout_s: connect/read timeout for each ``/metrics`` request.
            clock: unix-seconds clock stamped on snapshots (injectable for tests).
            client: an httpx client to reuse; one is made when omitted.
        """
        self._timeout = httpx.Timeout(timeout_s)
        self._clock = clock
        self._client = client or httpx.Client(timeout=self._timeout)
        self._baselines: dict[tuple, Snapshot] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(target: MetricsTarget) -> tuple:
        return (target.model_name, target.model_version, target.revision, tuple(sorted(target.urls)))

    def snapshot(self, target: MetricsTarget) -> Snapshot:
        """Cumulative counters of ``target`` now, summed over its servers.

        Raises:
            MetricsUnavailable: no URLs, or a server cannot be read (names the URL).
        """
        if not target.urls:
            raise MetricsUnavailable(
                f"scrape provider needs the servers' URLs for {target.model_name}:{target.model_version}; "
                "set MetricsTarget.urls"
            )
        total = Snapshot(at=self._clock())
        for url in target.urls:
            metrics_url = f"{url.rstrip('/')}/metrics"
            try:
                resp = self._client.get(metrics_url, timeout=self._timeout)
                resp.raise_for_status()
            except httpx.HTTPStatusError as exc:
                raise MetricsUnavailable(f"{metrics_url} answered HTTP {exc.response.status_code}") from exc
            except httpx.HTTPError as exc:
                raise MetricsUnavailable(f"cannot read {metrics_url}: {type(exc).__name__}: {exc}") from exc
            try:
                part = parse_metrics(resp.text, target, total.at)
            except ValueError as exc:
                raise MetricsUnavailable(f"{metrics_url} is not Prometheus text format: {exc}") from exc
            total = _merge(total, part)
        return total

    def prime(self, target: MetricsTarget) -> None:
        snap = self.snapshot(target)
        with self._lock:
            self._baselines[self._key(target)] = snap

    def collect(self, target: MetricsTarget, start: float, end: float) -> RevisionMetrics:
        """What ``target`` did since the previous snapshot (``start``/``end`` are not used
        to pick the window; the returned metrics carry the real snapshot times).

        The first call for a target only takes the baseline and returns an empty window.
        """
        now = self.snapshot(target)
        with self._lock:
            key = self._key(target)
            before = self._baselines.get(key)
            self._baselines[key] = now
        if before is None:
            log.info("scrape: baseline taken for %s:%s", target.model_name, target.model_version)
            return RevisionMetrics(target=target, start=now.at, end=now.at)
        if now.went_down_from(before):
            log.warning(
                "scrape: counters of %s:%s went down (server restart); counting from zero",
                target.model_name,
                target.model_version,
            )
            before = Snapshot(at=before.at)
        requests = sum(now.by_code.values()) - sum(before.by_code.values())
        errors = sum(v - before.by_code.get(k, 0.0) for k, v in now.by_code.items() if is_server_error(k))
        return RevisionMetrics(
            target=target,
            start=before.at,
            end=now.at,
            requests=int(round(max(0.0, requests))),
            errors=int(round(max(0.0, errors))),
            latency=now.histogram("latency").minus(before.histogram("latency")),
            ttft=now.histogram("ttft").minus(before.histogram("ttft")),
            generated_tokens=int(round(max(0.0, now.generated - before.generated))),
        )

    def close(self) -> None:
        self._client.close()


__all__ = ["ScrapeProvider", "Snapshot", "is_server_error", "parse_metrics"]
