"""The ``prometheus`` provider against a real Prometheus scraping a real exporter."""

from __future__ import annotations

import time

import httpx
import pytest

from serving.metrics.base import Histogram, MetricsTarget, MetricsUnavailable
from serving.metrics.prometheus import PrometheusProvider, selector
from tests.support.metrics_exporter import start_exporter
from tests.support.prometheus import _parse_ts, free_port, run_prometheus, wait_for_scrapes

pytestmark = pytest.mark.integration

BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

CANARY_LAT = [0.2] * 80 + [0.6] * 20
STABLE_LAT = [0.2] * 285 + [0.3] * 15


def _last_scrape(url: str) -> float:
    targets = httpx.get(f"{url}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
    return max(_parse_ts(t["lastScrape"]) for t in targets)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """Prometheus that has seen known canary/stable traffic; yields (url, start, end)."""
    exporter = start_exporter()
    try:
        yield from _scraped(exporter, tmp_path_factory.mktemp("prom"))
    finally:
        exporter.stop()


def _scraped(exporter, workdir):
    for version in ("v1", "v2"):
        exporter.init("chat", version, codes=("200", "404", "500", "503"))
    with run_prometheus([exporter.url.removeprefix("http://")], workdir) as url:
        wait_for_scrapes(url)  # the zero-valued series are stored
        start = time.time() - 1
        wait_for_scrapes(url)
        for i, v in enumerate(CANARY_LAT):
            code = "500" if i % 20 == 0 else ("404" if i % 50 == 1 else "200")  # 5 x 500, 2 x 404
            exporter.serve("chat", "v2", code, v, v / 10, tokens=4)
        for i, v in enumerate(STABLE_LAT):
            exporter.serve("chat", "v1", "503" if i % 100 == 0 else "200", v, v / 10, tokens=4)
        after = time.time()
        wait_for_scrapes(url, after)
        wait_for_scrapes(url)
        # query right at the last scrape, so increase() barely extrapolates
        end = _last_scrape(url) + 0.01
        yield url, start, end


def test_counts_and_p95_per_revision(scraped):
    url, start, end = scraped
    provider = PrometheusProvider(url)
    canary = provider.collect(MetricsTarget("chat", "v2"), start, end)
    stable = provider.collect(MetricsTarget("chat", "v1"), start, end)

    assert canary.requests == pytest.approx(100, rel=0.06)
    assert stable.requests == pytest.approx(300, rel=0.06)
    assert canary.errors == pytest.approx(5, abs=1)  # 500s; the 404s are not errors
    assert stable.errors == pytest.approx(3, abs=1)
    assert canary.generated_tokens == pytest.approx(400, rel=0.06)

    want_c = Histogram.from_observations(CANARY_LAT, BOUNDS).quantile(0.95)
    want_s = Histogram.from_observations(STABLE_LAT, BOUNDS).quantile(0.95)
    assert canary.latency_p(0.95) == pytest.approx(want_c, rel=0.02)
    assert stable.latency_p(0.95) == pytest.approx(want_s, rel=0.02)
    assert canary.latency.count == pytest.approx(100, rel=0.06)
    assert canary.latency.total == pytest.approx(sum(CANARY_LAT), rel=0.06)
    assert canary.ttft_p(0.95) == pytest.approx(want_c / 10, rel=0.1)
    # rank tests get observations in the right order
    assert max(canary.latency.samples()) > max(stable.latency.samples())


def test_unknown_revision_is_an_empty_window(scraped):
    url, start, end = scraped
    m = PrometheusProvider(url).collect(MetricsTarget("chat", "v9"), start, end)
    assert m.requests == 0 and m.errors == 0 and m.latency.count == 0 and m.latency_p() is None


def test_bad_query_is_metrics_unavailable_with_prometheus_message(scraped):
    url, _, end = scraped
    with pytest.raises(MetricsUnavailable, match=r"answered HTTP 400 for 'sum\(': .*parse error"):
        PrometheusProvider(url).query("sum(", end)


def test_unreachable_prometheus_is_metrics_unavailable():
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MetricsUnavailable, match=f"cannot reach Prometheus at {dead}/api/v1/query"):
        PrometheusProvider(dead, timeout_s=1).collect(MetricsTarget("chat", "v2"), 0, 60)


def test_selector_escapes_label_values():
    sel = selector(MetricsTarget('a"b', "v\\1", namespace="prod"))
    assert sel == '{model_name="a\\"b",model_version="v\\\\1",namespace="prod"}'
