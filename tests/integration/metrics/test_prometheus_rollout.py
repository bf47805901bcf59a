"""The rollout controller driven by the real ``prometheus`` provider against a real Prometheus.

Guards issue 12 defect 2: the controller primes each interval with an empty window
(``start == end``), which the provider refused with a ``ValueError`` that reached
users as a traceback. Here the whole canary runs through Prometheus; a provider
that cannot answer becomes an ERROR measurement, never an exception.
"""

from __future__ import annotations

import threading
import time

import pytest

from serving.metrics.base import MetricsTarget
from serving.metrics.prometheus import PrometheusProvider
from serving.rollout.analysis import AnalysisPolicy
from serving.rollout.controller import RolloutController
from tests.support.metrics_exporter import start_exporter
from tests.support.prometheus import free_port, prometheus_available, run_prometheus, wait_for_scrapes
from tests.support.rollout_fakes import NAME, NS, FakeKServeBackend, RecordingHooks, service, strategy

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not prometheus_available(), reason="prometheus binary missing (apt-get install prometheus)"),
]


def _drive(controller: RolloutController, timeout_s: float = 40.0):
    outcomes = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = controller.step(time.time())
        outcomes.append(out)
        if out.done:
            return outcomes
        time.sleep(min(max(out.next_check_s, 0.05), 0.5))
    raise AssertionError(f"rollout did not finish: last outcomes {[o.action for o in outcomes[-5:]]}")


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    # one exporter per revision, labelled as the kit's PodMonitor labels a pod's series (namespace, revision):
    # the controller selects each arm by version AND revision (the stand-in names them <name>-predictor-0000N)
    exporters = {version: start_exporter() for version in ("1", "2")}
    for version, exporter in exporters.items():
        exporter.init(NAME, version, codes=("200", "500"))
    stop = threading.Event()

    def traffic():  # both revisions answer alike: the canary should pass every interval
        while not stop.is_set():
            for version, exporter in exporters.items():
                for _ in range(5):
                    exporter.serve(NAME, version, "200", 0.05, 0.01, tokens=4)
            time.sleep(0.05)

    feeder = threading.Thread(target=traffic, daemon=True)
    feeder.start()
    hosts = {version: e.url.removeprefix("http://") for version, e in exporters.items()}
    labels = {host: {"namespace": NS, "revision": f"{NAME}-predictor-{int(version):05d}"} for version, host in hosts.items()}
    try:
        with run_prometheus(list(hosts.values()), tmp_path_factory.mktemp("prom"), labels=labels) as url:
            wait_for_scrapes(url)
            yield url
    finally:
        stop.set()
        feeder.join(5)
        for exporter in exporters.values():
            exporter.stop()


def test_empty_window_is_no_traffic_not_an_error(prometheus):
    now = time.time()
    m = PrometheusProvider(prometheus).collect(MetricsTarget(model_name=NAME, model_version="1", namespace=NS), now, now)
    assert m.requests == 0 and m.errors == 0


def test_canary_analysed_through_prometheus_is_promoted(prometheus):
    backend, hooks = FakeKServeBackend(), RecordingHooks()
    plan = strategy(steps=(50, 100), interval_s=2.0, analysis_policy=AnalysisPolicy(min_requests=10))
    provider = PrometheusProvider(prometheus)
    _drive(RolloutController(backend, service("1"), plan, provider, hooks=hooks, holder="t"))
    controller = RolloutController(backend, service("2"), plan, provider, hooks=hooks, holder="t")
    last = _drive(controller)[-1]
    assert last.result == "promoted", last.message
    intervals = controller.last_state.intervals
    assert [i["phase"] for i in intervals] == ["Successful", "Successful"]
    assert all(i["canary"]["requests"] >= 10 and i["stable"]["requests"] >= 10 for i in intervals[:1])
    assert hooks.kinds == ["promoted", "promoted"]


def test_unreachable_prometheus_is_an_error_measurement_and_a_rollback():
    backend, hooks = FakeKServeBackend(), RecordingHooks()
    plan = strategy(steps=(50, 100), interval_s=0.5)
    dead = PrometheusProvider(f"http://127.0.0.1:{free_port()}", timeout_s=0.5)
    _drive(RolloutController(backend, service("1"), plan, dead, hooks=hooks, holder="t"))
    controller = RolloutController(backend, service("2"), plan, dead, hooks=hooks, holder="t")
    last = _drive(controller)[-1]
    assert last.result == "rolled_back"
    # transient provider failures are tolerated (max_provider_errors), then the judge reports it could not see
    phases = [i["phase"] for i in controller.last_state.intervals]
    assert phases[-1] == "Error" and "Failed" not in phases, phases
    record = controller.last_state.intervals[-1]
    assert "cannot reach Prometheus" in " ".join(record["reasons"])
