"""Arms by revision on a real Prometheus: the kit's PodMonitor relabelling, applied by Prometheus itself.

Two exporters serve the SAME model version (a re-roll with a new runtime or
arguments). Each scrape target carries the pod metadata label Kubernetes
service discovery would give it (``__meta_kubernetes_pod_label_serving_knative_dev_revision``),
and the job's ``relabel_configs`` are the rendered PodMonitor's ``relabelings``
(prometheus-operator copies them field for field, camelCase to snake_case).
"""

from __future__ import annotations

import time

import pytest

from serving.cluster.render import KitSpec, render_pod_monitor
from serving.isvc import DeploymentMode
from serving.metrics.base import MetricsTarget
from serving.metrics.prometheus import PrometheusProvider
from tests.support.metrics_exporter import start_exporter
from tests.support.prometheus import prometheus_available, run_prometheus, wait_for_scrapes

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not prometheus_available(), reason="prometheus not installed")]

OLD, NEW = "chat-predictor-00001", "chat-predictor-00002"
KEYS = {"sourceLabels": "source_labels", "targetLabel": "target_label", "action": "action", "regex": "regex",
        "replacement": "replacement", "separator": "separator"}


def relabel_configs() -> list[dict]:
    """The PodMonitor's relabelings as Prometheus relabel_configs (what prometheus-operator generates)."""
    pm = render_pod_monitor(KitSpec(model="chat", mode=DeploymentMode.SERVERLESS), "ns")
    (endpoint,) = pm["spec"]["podMetricsEndpoints"]
    return [{KEYS[k]: v for k, v in r.items()} for r in endpoint["relabelings"]]


def test_two_revisions_of_one_version_are_two_arms(tmp_path):
    old, new = start_exporter(), start_exporter()
    try:
        for exp in (old, new):
            exp.init("chat", "1", codes=("200", "500"))
        job = {
            "job_name": "pods", "scrape_interval": "1s", "scrape_timeout": "900ms", "metrics_path": "/metrics",
            "static_configs": [
                {"targets": [e.url.removeprefix("http://")],
                 "labels": {"__meta_kubernetes_pod_label_serving_knative_dev_revision": rev}}
                for e, rev in ((old, OLD), (new, NEW))
            ],
            "relabel_configs": relabel_configs(),
        }
        with run_prometheus([], tmp_path, scrape_configs=[job]) as url:
            wait_for_scrapes(url)
            start = time.time() - 1
            # flat scrapes on both sides of the traffic: increase() extrapolates the delta by window / sampled span,
            # so a window a few scrape intervals wide read 26 for 20 on a loaded machine; padded, the error is ~10%
            for _ in range(3):
                wait_for_scrapes(url)
            for _ in range(60):
                old.serve("chat", "1", "200", 0.05, 0.01, tokens=2)
            for i in range(20):
                new.serve("chat", "1", "500" if i % 4 == 0 else "200", 0.8, 0.2, tokens=2)
            wait_for_scrapes(url, time.time())
            for _ in range(3):
                wait_for_scrapes(url)
            end = time.time()
            provider = PrometheusProvider(url)
            stable = provider.collect(MetricsTarget("chat", "1", revision=OLD), start, end)
            canary = provider.collect(MetricsTarget("chat", "1", revision=NEW), start, end)
            both = provider.collect(MetricsTarget("chat", "1"), start, end)
    finally:
        old.stop()
        new.stop()
    # increase() extrapolates to the window's edges, so counts can read a little high when scrapes are late
    assert stable.requests == pytest.approx(60, rel=0.25) and stable.errors == 0
    assert canary.requests == pytest.approx(20, rel=0.25) and canary.errors == pytest.approx(5, abs=2)
    assert canary.latency_p(0.5) > 10 * stable.latency_p(0.5)
    # selecting by version alone mixes the arms: the comparison the revision label prevents
    assert both.requests == pytest.approx(80, rel=0.25)


def test_selectors_name_the_revision_and_pods():
    from serving.metrics.prometheus import selector

    sel = selector(MetricsTarget("chat", "1", namespace="prod", revision=NEW, pods=("pod2", "pod.1")))
    assert sel == ('{model_name="chat",model_version="1",namespace="prod",revision="chat-predictor-00002",'
                   'pod=~"pod\\\\.1|pod2"}')


def test_scrape_keeps_only_the_targets_revision_where_the_exposition_names_it():
    from serving.metrics.scrape import parse_metrics

    text = (
        "# TYPE llmops_requests_total counter\n"
        f'llmops_requests_total{{model_name="chat",model_version="1",code="200",revision="{OLD}"}} 7\n'
        f'llmops_requests_total{{model_name="chat",model_version="1",code="200",revision="{NEW}"}} 3\n'
    )
    assert parse_metrics(text, MetricsTarget("chat", "1", revision=NEW), 0.0).by_code == {"200": 3.0}
    assert parse_metrics(text, MetricsTarget("chat", "1"), 0.0).by_code == {"200": 10.0}
