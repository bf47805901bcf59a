"""Pick a metrics provider by name."""

from __future__ import annotations

from enum import Enum
from typing import Any

from serving.metrics.base import MetricsProvider


class MetricsProviderName(str, Enum):
    """Known metrics providers."""

    PROMETHEUS = "prometheus"  # PromQL over a Prometheus server's HTTP API
    SCRAPE = "scrape"  # read the model servers' /metrics directly


def make_provider(name: str, **options: Any) -> MetricsProvider:
    """Build the provider called ``name``.

    Args:
        name: ``prometheus`` or ``scrape``.
        **options: the implementation's constructor arguments (``prometheus``
            needs ``url``; ``scrape`` takes ``timeout_s``).

    Raises:
        ValueError: unknown name (lists the known ones) or bad options.
    """
    known = ", ".join(m.value for m in MetricsProviderName)
    try:
        kind = MetricsProviderName(name)
    except ValueError:
        raise ValueError(f"unknown metrics provider {name!r}; known: {known}") from None
    try:
        if kind is MetricsProviderName.PROMETHEUS:
            from serving.metrics.prometheus import PrometheusProvider

            if "url" not in options:
                raise ValueError("the prometheus metrics provider needs url=..., e.g. http://prometheus:9090")
            return PrometheusProvider(**options)
        from serving.metrics.scrape import ScrapeProvider

        return ScrapeProvider(**options)
    except TypeError as exc:
        raise ValueError(f"bad options for metrics provider {kind.value!r}: {exc}") from exc
