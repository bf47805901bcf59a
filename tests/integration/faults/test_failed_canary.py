"""A canary revision that fails to start rolls back at once, with the cause (not after --ready-timeout)."""

from __future__ import annotations

import shutil
import time

import pytest

from serving.backends.base import PredictorStatus, revision_failure
from serving.isvc import PredictorSpec, ServiceSpec, render_isvc
from serving.metrics.factory import make_provider
from serving.rollout.controller import RolloutController, predictor_version
from serving.rollout.runner import run_rollout
from serving.rollout.strategy import RolloutStrategy
from tests.support.rollout_fakes import RecordingHooks

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

NAME, NS = "llm", "faults"


def _svc(model_dir, version):
    return ServiceSpec(name=NAME, namespace=NS, predictor=PredictorSpec(
        storage_uri=str(model_dir), model_version=version, cpu="1", memory="1Gi"))


def test_a_canary_whose_server_exits_rolls_back_at_once_with_the_cause(tmp_path, micro_model):
    from serving.backends.local import LocalBackend

    broken = tmp_path / "v2"
    shutil.copytree(micro_model, broken)
    (broken / "model.safetensors").unlink()  # the server exits a few seconds after it starts
    backend = LocalBackend(tmp_path / "serving", ready_timeout_s=600, stop_timeout_s=2)
    try:
        backend.apply(render_isvc(_svc(micro_model, "1")))
        assert PredictorStatus.from_isvc(backend.wait_ready(NAME, NS, 240)).ready
        strategy = RolloutStrategy(steps=(10, 100), interval_s=1.0, lease_ttl_s=4.0, ready_timeout_s=600.0, quality_probe=False)
        hooks = RecordingHooks()
        ctrl = RolloutController(backend, _svc(broken, "2"), strategy, make_provider("scrape"), hooks=hooks, holder="t")
        started = time.monotonic()
        result = run_rollout(ctrl, report_dir=tmp_path / "report", max_duration_s=200)
        took = time.monotonic() - started
        assert result.outcome == "rolled_back", result.reason
        assert took < 120, took  # far below the 600 s ready timeout
        assert "canary revision" in result.reason and "failed" in result.reason
        assert "model server exited" in result.reason  # the cause, from the revision's own status
        assert hooks.kinds == ["rolled_back"]
        obj = backend.get(NAME, NS)
        assert predictor_version(obj["spec"]["predictor"]) == "1"
        assert [t.percent for t in PredictorStatus.from_isvc(obj).traffic if t.percent] == [100]
    finally:
        for ns, name in backend.services():
            backend.delete(name, ns)


@pytest.mark.parametrize("status,cause", [
    ({"conditions": [{"type": "PredictorReady", "status": "False", "reason": "RevisionFailed",
                      "message": "Revision \"llm-predictor-00002\" failed with message: OOMKilled"}]}, "OOMKilled"),
    ({"conditions": [{"type": "ContainerHealthy", "status": "False", "reason": "ExitCode1", "message": "exit 1"}]}, "exit 1"),
    ({"modelStatus": {"transitionStatus": "BlockedByFailedLoad",
                      "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "no safetensors"}}}, "no safetensors"),
    ({"conditions": [{"type": "PredictorReady", "status": "Unknown", "reason": "RevisionMissing"}]}, None),
], ids=["RevisionFailed", "ContainerHealthy", "BlockedByFailedLoad", "still-starting"])
def test_kserve_failure_conditions_are_read_as_a_failed_revision(status, cause):
    found = revision_failure(status)
    assert (found is None) if cause is None else (cause in found)
