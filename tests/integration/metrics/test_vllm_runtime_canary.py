"""A vLLM-served release under the same canary: vLLM-format /metrics, scraped by the real Prometheus.

Two exposition servers stand for the stable and canary predictor pods of a ``kserve-vllmserver``
InferenceService (vLLM's families and labels, ``tests/support/vllm_metrics.py``); Prometheus attaches
``model_version`` and ``namespace`` as the kit's PodMonitor relabelling does from the pod labels. The
rollout controller reads them through :mod:`serving.metrics.runtimes`' vLLM mapping and promotes a
healthy canary and rolls back a slow, failing one.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from serving.isvc import DeploymentMode, PredictorSpec, ServiceSpec, render_isvc
from serving.metrics.prometheus import PrometheusProvider
from serving.metrics.runtimes import MAPPINGS, ServingRuntimeKind
from serving.rollout.controller import RolloutController
from tests.support.prometheus import prometheus_available, run_prometheus, wait_for_scrapes
from tests.support.rollout_fakes import NAME, NS, FakeKServeBackend, strategy, traffic_shares
from tests.support.vllm_metrics import start_vllm_pod

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not prometheus_available(), reason="needs /usr/bin/prometheus (scripts/setup.sh installs it)"),
]


def _service(version: str) -> ServiceSpec:
    return ServiceSpec(
        name=NAME, namespace=NS, deployment_mode=DeploymentMode.SERVERLESS,
        predictor=PredictorSpec(storage_uri=f"pvc://models/v{version}", model_version=version, cpu="1",
                                memory="1Gi", serving_runtime="vllm"),
    )  # fmt: skip


class Traffic(threading.Thread):
    """Requests at ``rps``, split by the traffic the backend reports, observed on each version's pod."""

    def __init__(self, backend, pods, bad_canary: bool, rps: float = 60.0):
        super().__init__(daemon=True)
        self.backend, self.pods, self.bad, self.rps = backend, pods, bad_canary, rps
        self.stopped = threading.Event()
        self.rng = random.Random(7)
        self.owed = {v: 0.0 for v in pods}

    def run(self):
        last = time.monotonic()
        while not self.stopped.wait(0.05):
            now = time.monotonic()
            dt, last = now - last, now
            versions = self.backend.standin.revision_versions
            shares = traffic_shares(self.backend.get(NAME, NS))
            for version, pod in self.pods.items():
                share = sum(p for rev, p in shares.items() if versions.get(rev) == version)
                self.owed[version] += self.rps * dt * share / 100
                while self.owed[version] >= 1:
                    self.owed[version] -= 1
                    self._request(version, pod)

    def _request(self, version, pod):
        r = self.rng
        if version == "2" and self.bad:
            if r.random() < 0.25:
                pod.failed()
            else:
                pod.finished(r.uniform(1.6, 2.4), r.uniform(0.3, 0.7), tokens=64)
        else:
            pod.finished(r.uniform(0.35, 0.75), r.uniform(0.02, 0.06), tokens=64)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    pods = {v: start_vllm_pod(NAME) for v in ("1", "2")}
    # as the kit's PodMonitor labels a pod's series: version, namespace and the revision (the arm the controller selects)
    labels = {pod.host: {"model_version": v, "namespace": NS, "revision": f"{NAME}-predictor-{int(v):05d}"} for v, pod in pods.items()}
    try:
        with run_prometheus([p.host for p in pods.values()], tmp_path_factory.mktemp("prom"), labels=labels) as url:
            wait_for_scrapes(url)
            yield url, pods
    finally:
        for pod in pods.values():
            pod.stop()


def _rollout(prometheus, bad_canary: bool):
    url, pods = prometheus
    backend = FakeKServeBackend()
    backend.apply(render_isvc(_service("1")))
    traffic = Traffic(backend, pods, bad_canary)
    traffic.start()
    ctrl = RolloutController(
        backend, _service("2"), strategy(steps=(50, 100), interval_s=3.0),
        PrometheusProvider(url, runtime="vllm"),
    )  # fmt: skip
    analyses = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = ctrl.step(time.time())
            if out.analysis:
                analyses.append(out.analysis)
            if out.done:
                return out, analyses, backend
            time.sleep(min(max(out.next_check_s, 0.2), 1.0))
        raise AssertionError("the rollout did not finish in 60 s")
    finally:
        traffic.stopped.set()
        traffic.join(5)


def test_healthy_vllm_canary_is_promoted(prometheus):
    out, analyses, backend = _rollout(prometheus, bad_canary=False)
    assert out.result == "promoted", out.message
    assert analyses  # judged on data: vLLM's series were found for both versions
    model = backend.get(NAME, NS)["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "vLLM"} and model["runtime"] == "kserve-vllmserver"


def test_slow_failing_vllm_canary_is_rolled_back(prometheus):
    out, analyses, _ = _rollout(prometheus, bad_canary=True)
    assert out.result == "rolled_back", out.message
    assert analyses and "inconclusive" not in out.message  # judged on vLLM's series, not for lack of data
    # errors come from http_requests_total{status="5xx"}; latency and TTFT from vLLM's histograms
    for what in ("error rate", "latency p95", "ttft p95"):
        assert what in out.message, out.message


def test_mapping_names_are_what_the_exposition_serves(prometheus):
    """Drift guard: every series the vLLM mapping reads is in Prometheus, scraped from a vLLM-format pod."""
    import httpx

    url, _ = prometheus
    names = set(httpx.get(f"{url}/api/v1/label/__name__/values", timeout=5).json()["data"])
    # Prometheus 2.x scrapes OpenMetrics, for which prometheus_client escapes ':' to '_' (the mapping reads both).
    assert {n.replace(":", "_") for n in MAPPINGS[ServingRuntimeKind.VLLM].names()} <= names
