"""The ``scrape`` provider against real /metrics endpoints over HTTP."""

from __future__ import annotations

import pytest

from serving.metrics.base import Histogram, MetricsTarget, MetricsUnavailable
from serving.metrics.factory import MetricsProviderName, make_provider
from serving.metrics.scrape import ScrapeProvider
from tests.support.prometheus import free_port

pytestmark = pytest.mark.integration

BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_first_collect_is_a_baseline_then_windows_are_differences(exporter):
    canary = MetricsTarget("chat", "v2", urls=(exporter.url,))
    exporter.init("chat", "v2")
    exporter.serve("chat", "v2", "200", 0.1, 0.01)  # before the baseline: not counted
    clock = Clock()
    provider = ScrapeProvider(clock=clock)

    first = provider.collect(canary, 0, 1)
    assert first.requests == 0 and first.latency.count == 0

    lat = [0.2] * 16 + [0.6] * 4
    for i, v in enumerate(lat):
        exporter.serve("chat", "v2", "500" if i < 3 else ("404" if i == 3 else "200"), v, 0.02, tokens=5)
    exporter.serve("chat", "v1", "500", 3.0, 0.5)  # the stable revision: filtered out
    exporter.serve("other", "v2", "500", 3.0, 0.5)  # another model: filtered out
    clock.t = 1060.0

    m = provider.collect(canary, 1000, 1060)
    assert (m.start, m.end) == (1000.0, 1060.0)
    assert m.requests == 20
    assert m.errors == 3  # 500s only; the 404 is the client's fault
    assert m.generated_tokens == 100
    expected = Histogram.from_observations(lat, BOUNDS)
    assert m.latency.count == 20
    assert m.latency_p(0.95) == pytest.approx(expected.quantile(0.95))
    assert m.ttft.count == 20 and m.ttft_p(0.5) <= 0.025

    # nothing new: an empty window, not the totals again
    clock.t = 1120.0
    again = provider.collect(canary, 1060, 1120)
    assert again.requests == 0 and again.errors == 0 and again.latency.count == 0


def test_sums_across_the_revisions_servers(exporter_factory):
    a, b = exporter_factory(), exporter_factory()
    target = MetricsTarget("chat", "v2", urls=(a.url, b.url))
    for exp in (a, b):
        exp.init("chat", "v2")
    provider = ScrapeProvider()
    provider.prime(target)
    for _ in range(7):
        a.serve("chat", "v2", "200", 0.2, 0.02)
    for _ in range(5):
        b.serve("chat", "v2", "503", 0.9, 0.5)
    m = provider.collect(target, 0, 1)
    assert (m.requests, m.errors) == (12, 5)
    assert m.latency.count == 12
    assert m.error_rate == pytest.approx(5 / 12)


def test_server_restart_counts_from_zero(exporter_factory):
    first = exporter_factory()
    port = int(first.url.rsplit(":", 1)[1])
    target = MetricsTarget("chat", "v2", urls=(first.url,))
    for _ in range(50):
        first.serve("chat", "v2", "200", 0.2, 0.02)
    provider = ScrapeProvider()
    provider.prime(target)
    first.stop()

    second = exporter_factory(port)  # the same address, counters back at zero
    for _ in range(4):
        second.serve("chat", "v2", "500", 0.3, 0.03)
    m = provider.collect(target, 0, 1)
    assert (m.requests, m.errors, m.latency.count) == (4, 4, 4)


def test_unreachable_server_is_metrics_unavailable_naming_the_url(exporter):
    dead = f"http://127.0.0.1:{free_port()}"
    target = MetricsTarget("chat", "v2", urls=(exporter.url, dead))
    provider = ScrapeProvider(timeout_s=1)
    with pytest.raises(MetricsUnavailable, match=f"cannot read {dead}/metrics"):
        provider.collect(target, 0, 1)


def test_not_metrics_is_metrics_unavailable(exporter):
    # the exporter answers 200 on any path; a wrong base URL still yields text,
    # so point at something that answers with an error status instead
    import http.server
    import threading

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        with pytest.raises(MetricsUnavailable, match=f"{url}/metrics answered HTTP 404"):
            ScrapeProvider().collect(MetricsTarget("chat", "v2", urls=(url,)), 0, 1)
    finally:
        srv.shutdown()
        srv.server_close()


def test_target_without_urls_is_refused_with_the_fix():
    with pytest.raises(MetricsUnavailable, match="set MetricsTarget.urls"):
        ScrapeProvider().collect(MetricsTarget("chat", "v2"), 0, 1)


def test_factory_builds_known_providers_and_refuses_unknown_names():
    assert isinstance(make_provider("scrape", timeout_s=1), ScrapeProvider)
    assert isinstance(make_provider(MetricsProviderName.SCRAPE), ScrapeProvider)
    from serving.metrics.prometheus import PrometheusProvider

    assert isinstance(make_provider("prometheus", url="http://127.0.0.1:9090"), PrometheusProvider)
    with pytest.raises(ValueError, match="unknown metrics provider 'datadog'; known: prometheus, scrape"):
        make_provider("datadog")
    with pytest.raises(ValueError, match="needs url="):
        make_provider("prometheus")
    with pytest.raises(ValueError, match="bad options for metrics provider 'scrape'"):
        make_provider("scrape", url="http://x")
    with pytest.raises(ValueError, match="must start with http"):
        make_provider("prometheus", url="prometheus:9090")
