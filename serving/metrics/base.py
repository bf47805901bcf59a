"""Metrics providers: what the canary analysis reads about one revision.

A provider turns the model servers' Prometheus metrics (names in
``serving/runtime/METRICS.md``) into :class:`RevisionMetrics` for a time window.
Implementations, one file each: ``prometheus`` (PromQL over HTTP) and
``scrape`` (reads ``/metrics`` of the servers directly); ``factory`` picks one.

Errors::

    MetricsError
    └── MetricsUnavailable   the source cannot be reached or answered badly
"""

from __future__ import annotations

from llmops_core.errors import LlmopsError

import abc
import bisect
import math
from dataclasses import dataclass, field


class MetricsError(LlmopsError):
    """Base class for metrics provider errors."""


class MetricsUnavailable(MetricsError):
    """The metrics source cannot be reached or returned an unusable answer."""


@dataclass(frozen=True)
class MetricsTarget:
    """Which revision to measure."""

    model_name: str  # the ``model_name`` label the server exports
    model_version: str  # the ``model_version`` label
    urls: tuple[str, ...] = ()  # base URLs of the revision's servers (scrape provider)
    namespace: str | None = None  # Kubernetes namespace (Prometheus provider, optional)
    revision: str | None = None  # serving revision (``revision`` label): tells canary from stable even at one version
    pods: tuple[str, ...] = ()  # the revision's pods (``pod`` label), where the backend knows them

    @property
    def arm(self) -> str:
        """``name:version@revision`` for logs and errors."""
        return f"{self.model_name}:{self.model_version}" + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class Histogram:
    """Observations in a window, as Prometheus cumulative buckets.

    ``buckets`` holds ``(upper_bound, cumulative_count)`` pairs sorted by bound,
    the last bound being ``math.inf``; ``total`` is the sum of observed values.
    """

    buckets: tuple[tuple[float, float], ...] = ()
    total: float = 0.0

    @property
    def count(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0

    def quantile(self, q: float) -> float | None:
        """Linear interpolation inside the bucket, as PromQL's ``histogram_quantile``."""
        if not self.buckets or self.count <= 0:
            return None
        rank = q * self.count
        bounds = [b for b, _ in self.buckets]
        counts = [c for _, c in self.buckets]
        i = bisect.bisect_left(counts, rank)
        i = min(i, len(bounds) - 1)
        if math.isinf(bounds[i]):
            return bounds[i - 1] if i > 0 else None
        lo_bound = bounds[i - 1] if i > 0 else 0.0
        lo_count = counts[i - 1] if i > 0 else 0.0
        in_bucket = counts[i] - lo_count
        if in_bucket <= 0:
            return bounds[i]
        return lo_bound + (bounds[i] - lo_bound) * (rank - lo_count) / in_bucket

    def samples(self, limit: int = 2000) -> list[float]:
        """Pseudo-observations (bucket midpoints repeated by count) for rank tests.

        Rank tests such as Mann-Whitney U only need the order of observations,
        which bucket midpoints preserve at the histogram's resolution.
        """
        out: list[float] = []
        prev_bound, prev_count = 0.0, 0.0
        scale = min(1.0, limit / self.count) if self.count else 1.0
        for bound, cum in self.buckets:
            n = int(round((cum - prev_count) * scale))
            mid = prev_bound * 1.5 if math.isinf(bound) else (prev_bound + bound) / 2
            out.extend([mid] * n)
            prev_bound, prev_count = (prev_bound if math.isinf(bound) else bound), cum
        return out

    @classmethod
    def from_observations(cls, values, bounds) -> "Histogram":
        """Bucket raw observations the way a Prometheus client does.

        Args:
            values: observed values (e.g. seconds).
            bounds: finite upper bounds in increasing order; ``+Inf`` is added.
        """
        uppers = sorted(float(b) for b in bounds if not math.isinf(float(b))) + [math.inf]
        counts = [0] * len(uppers)
        total = 0.0
        for v in values:
            counts[bisect.bisect_left(uppers, v)] += 1
            total += v
        cum, running = [], 0
        for b, c in zip(uppers, counts):
            running += c
            cum.append((b, float(running)))
        return cls(tuple(cum), total)

    def plus(self, other: "Histogram") -> "Histogram":
        """Both histograms' observations together (bucket bounds are merged)."""
        if not other.buckets:
            return self
        if not self.buckets:
            return other
        bounds = sorted({b for b, _ in self.buckets} | {b for b, _ in other.buckets})

        def at(h: "Histogram", bound: float) -> float:
            # cumulative count at ``bound``: the last bucket whose bound is <= it
            best = 0.0
            for b, c in h.buckets:
                if b <= bound:
                    best = c
            return best

        return Histogram(
            tuple((b, at(self, b) + at(other, b)) for b in bounds), self.total + other.total
        )

    def minus(self, earlier: "Histogram") -> "Histogram":
        """The observations made between ``earlier`` and this snapshot."""
        if not earlier.buckets:
            return self
        before = dict(earlier.buckets)
        return Histogram(
            tuple((b, max(0.0, c - before.get(b, 0.0))) for b, c in self.buckets),
            max(0.0, self.total - earlier.total),
        )


@dataclass(frozen=True)
class RevisionMetrics:
    """What one revision did during ``[start, end)``."""

    target: MetricsTarget
    start: float  # unix seconds
    end: float  # unix seconds
    requests: int = 0  # requests answered, any status
    errors: int = 0  # server-side failures (5xx, timeouts); 4xx are the client's
    latency: Histogram = field(default_factory=Histogram)  # end-to-end seconds
    ttft: Histogram = field(default_factory=Histogram)  # time to first token, seconds
    generated_tokens: int = 0

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def latency_p(self, q: float = 0.95) -> float | None:
        return self.latency.quantile(q)

    def ttft_p(self, q: float = 0.95) -> float | None:
        return self.ttft.quantile(q)


class MetricsProvider(abc.ABC):
    """Reads one revision's serving metrics for a window."""

    @abc.abstractmethod
    def collect(self, target: MetricsTarget, start: float, end: float) -> RevisionMetrics:
        """Return what ``target`` did between ``start`` and ``end`` (unix seconds).

        Raises:
            MetricsUnavailable: the source cannot be reached or answered badly.
        """

    def prime(self, target: MetricsTarget) -> None:
        """Take a baseline for ``target`` now (stateful providers such as ``scrape``).

        Stateless providers ignore it. A controller calls it when a step starts so
        that the first :meth:`collect` of the step covers the step only.

        Raises:
            MetricsUnavailable: the source cannot be reached or answered badly.
        """
