"""``prometheus`` provider: PromQL over Prometheus' HTTP API.

Each :meth:`PrometheusProvider.collect` runs instant queries (``/api/v1/query``)
at ``time=end`` over a range of ``end - start`` seconds (at least one second);
an empty window (``end <= start``) returns no traffic without a query, and the
provider is stateless, so :meth:`MetricsProvider.prime` does nothing::

    sum by (code) (increase(llmops_requests_total{SEL}[Ns]))
    sum by (le)   (increase(llmops_request_duration_seconds_bucket{SEL}[Ns]))
    sum           (increase(llmops_request_duration_seconds_sum{SEL}[Ns]))
    ... the same for llmops_time_to_first_token_seconds, and
    sum           (increase(llmops_generated_tokens_total{SEL}[Ns]))

where ``SEL`` selects ``model_name``, ``model_version``, and, when the target
names them, ``namespace``, ``revision`` (the label the kit's PodMonitor
relabelling puts on every series from the revision's pods, so two revisions of
the same version are two arms) and ``pod``. The bucket increases become a :class:`Histogram`, so
the analysis can run rank tests on them. ``increase`` extrapolates to the window
edges, so counts are rounded and may differ from the true count by a few per
cent; ratios and quantiles are not affected.
"""

from __future__ import annotations

import math
import re
from typing import Any

import httpx

from serving.metrics.base import Histogram, MetricsProvider, MetricsTarget, MetricsUnavailable, RevisionMetrics
from serving.metrics.scrape import GENERATED, LATENCY, REQUESTS, TTFT, is_server_error
from serving.urls import mask_credentials


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def selector(target: MetricsTarget) -> str:
    """The PromQL label matcher for one revision."""
    labels = [("model_name", target.model_name), ("model_version", target.model_version)]
    if target.namespace:
        labels.append(("namespace", target.namespace))
    if target.revision:
        labels.append(("revision", target.revision))
    matchers = [f"{k}={_quote(v)}" for k, v in labels]
    if target.pods:
        matchers.append("pod=~" + _quote("|".join(re.escape(p) for p in sorted(target.pods))))
    return "{" + ",".join(matchers) + "}"


class PrometheusProvider(MetricsProvider):
    """Queries a Prometheus server; see the module docstring."""

    def __init__(
        self,
        url: str,
        timeout_s: float = 5.0,
        headers: dict[str, str] | None = None,
        client: httpx.Client | None = None,
        runtime: str | None = None,
    ) -> None:
        """
        Args:
            url: Prometheus base URL, e.g. ``http://prometheus:9090``.
            timeout_s: per-query timeout.
            headers: extra HTTP headers (e.g. ``Authorization``); never logged.
            client: an httpx client to reuse; one is made when omitted.
            runtime: whose series to read: llmops (default), vllm or huggingfaceserver
                (see :mod:`serving.metrics.runtimes`).
        """
        from serving.metrics.runtimes import mapping_for

        self.names = mapping_for(runtime)
        if not url or not url.startswith(("http://", "https://")):
            raise ValueError(f"prometheus url must start with http:// or https://, got {mask_credentials(repr(url))}")
        self.url = url.rstrip("/")
        self._timeout = httpx.Timeout(timeout_s)
        self._client = client or httpx.Client(timeout=self._timeout, headers=headers or {})

    def query(self, promql: str, at: float) -> list[dict[str, Any]]:
        """Run one instant query; return the vector's elements.

        Raises:
            MetricsUnavailable: Prometheus unreachable, non-success status, or an
                answer that is not a vector.
        """
        endpoint = f"{self.url}/api/v1/query"
        shown = mask_credentials(endpoint)
        try:
            resp = self._client.post(endpoint, data={"query": promql, "time": f"{at:.3f}"}, timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise MetricsUnavailable(f"cannot reach Prometheus at {shown}: {type(exc).__name__}: {mask_credentials(exc)}") from exc
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
            detail = body.get("error") if isinstance(body, dict) else resp.text[:200]
            raise MetricsUnavailable(
                f"Prometheus at {shown} answered HTTP {resp.status_code} for {promql!r}: {detail}"
            )
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise MetricsUnavailable(f"Prometheus answered {data.get('resultType')!r}, expected a vector, for {promql!r}")
        return data.get("result") or []

    @staticmethod
    def _value(element: dict[str, Any]) -> float:
        v = float(element["value"][1])
        return 0.0 if math.isnan(v) else v

    def _scalar(self, promql: str, at: float) -> float:
        return sum(self._value(e) for e in self.query(promql, at))

    def _histogram(self, name: str, sel: str, rng: str, at: float) -> Histogram:
        return self.histogram_of(f"{name}_bucket{sel}", f"{name}_sum{sel}", rng, at)

    def histogram_of(self, buckets_series: str, sum_series: str, rng: str, at: float) -> Histogram:
        """The histogram's increase over ``rng`` from its ``_bucket`` and ``_sum`` series (selectors included)."""
        rows = self.query(f"sum by (le) (increase({buckets_series}[{rng}]))", at)
        pairs = sorted((float(e["metric"].get("le", "+Inf")), self._value(e)) for e in rows)
        if not pairs:
            return Histogram()
        buckets, running = [], 0.0
        for bound, count in pairs:
            running = max(running, count)  # extrapolation may break monotonicity slightly
            buckets.append((bound, running))
        total = self._scalar(f"sum(increase({sum_series}[{rng}]))", at)
        return Histogram(tuple(buckets), total)

    def collect(self, target: MetricsTarget, start: float, end: float) -> RevisionMetrics:
        if self.names.runtime.value != "llmops":
            from serving.metrics.runtimes import collect

            return collect(self, self.names, target, start, end)
        if end <= start:
            # An empty window (the controller primes an interval with start == end): nothing
            # happened in it, so there is nothing to query; the analysis reads it as no traffic.
            return RevisionMetrics(target=target, start=start, end=max(start, end))
        sel = selector(target)
        rng = f"{max(1, int(round(end - start)))}s"
        by_code = self.query(f"sum by (code) (increase({REQUESTS}{sel}[{rng}]))", end)
        requests = sum(self._value(e) for e in by_code)
        errors = sum(self._value(e) for e in by_code if is_server_error(e["metric"].get("code", "")))
        return RevisionMetrics(
            target=target,
            start=start,
            end=end,
            requests=int(round(requests)),
            errors=int(round(errors)),
            latency=self._histogram(LATENCY, sel, rng, end),
            ttft=self._histogram(TTFT, sel, rng, end),
            generated_tokens=int(round(self._scalar(f"sum(increase({GENERATED}{sel}[{rng}]))", end))),
        )

    def close(self) -> None:
        self._client.close()


__all__ = ["PrometheusProvider", "selector"]
