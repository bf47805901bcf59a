"""The sequential judge on real model servers: a canary with a latency TAIL is rolled back (local backend).

v2 is the same model with the TEST-ONLY fault ``--fault_latency_share 0.25
--fault_latency_ms 400``: a quarter of its requests are 400 ms slower, the
rest as fast as v1, so its median barely moves while its p95/p99 do. Metrics
come from the servers' own ``/metrics`` (``scrape`` provider, arms by revision).
"""

from __future__ import annotations

import pytest

from serving.metrics.factory import make_provider
from serving.rollout.analysis import AnalysisPolicy
from serving.rollout.controller import RolloutController
from serving.rollout.runner import run_rollout
from serving.rollout.strategy import RolloutStrategy
from tests.integration.rollout.test_rollout_scenarios_local import READY_S, assert_serves, deploy, svc, traffic
from tests.support.rollout_fakes import RecordingHooks

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(400)]


@pytest.fixture
def local(tmp_path):
    from serving.backends.local import LocalBackend

    backend = LocalBackend(tmp_path / "serving", ready_timeout_s=READY_S)
    yield backend
    for ns, name in backend.services():
        backend.delete(name, ns)


def test_tail_latency_canary_is_rolled_back_by_the_tail_check(local, tiny_model, tmp_path):
    url = deploy(local, tiny_model)
    plan = RolloutStrategy(
        steps=(10, 50, 100), interval_s=2.0, lease_ttl_s=4.0, ready_timeout_s=READY_S, warmup_s=2.0,
        quality_probe=False,
        # 30 canary requests per step: ~5 intervals at 10 %; ratio limit 2x (two model processes share busy CPUs)
        analysis_policy=AnalysisPolicy(min_requests=30, max_latency_ratio=2.0, max_ttft_ratio=None),
    )
    args = ("--fault_latency_ms", "400", "--fault_latency_share", "0.25", "--fault_seed", "11")
    ctrl = RolloutController(local, svc(tiny_model, "2", args), plan, make_provider("scrape"), hooks=RecordingHooks(),
                             holder="tail")
    with traffic(url):
        result = run_rollout(ctrl, report_dir=tmp_path / "report", max_duration_s=240)
    assert result.outcome == "rolled_back", result.reason
    failed = next(r for r in result.report["intervals"] if r["phase"] == "Failed")
    failing = {c["name"]: c for c in failed["checks"] if c["phase"] == "Failed"}
    assert "latency_tail" in failing, failed["reasons"]
    tail = failing["latency_tail"]["details"]
    assert tail["max_e_value"] >= tail["e_threshold"]
    assert tail["canary"]["p99"] > 0.4 > tail["stable"]["p99"]
    assert failed["canary_revision"] != failed["stable_revision"]
    assert_serves(local, "1")
    assert ctrl.hooks.kinds == ["rolled_back"]
    md = (tmp_path / "report" / "rollout.md").read_text()
    assert "## Evidence" in md and "latency_tail" in md
