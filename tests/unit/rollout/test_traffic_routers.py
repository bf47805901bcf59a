"""Traffic routers per mode, promotion and rollback as KServe does them (issue 12 defect 8, issue 11 item 1)."""

from __future__ import annotations

import pytest

from serving.isvc import DeploymentMode, render_isvc
from serving.rollout.state import RolloutPhase, RolloutState
from serving.routers.factory import make_router
from serving.routers.local import LocalRouter
from serving.routers.serverless import ServerlessRouter
from serving.routers.standard import StandardRouter
from tests.support.rollout_fakes import NAME, NS, SLOW, FakeKServeBackend, RecordingHooks, ScriptedMetrics, service
from tests.unit.rollout.test_rollout_controller import T0, drive, make, served_version


@pytest.mark.parametrize("name, cls", [("Serverless", ServerlessRouter), ("serverless", ServerlessRouter),
                                       (DeploymentMode.STANDARD, StandardRouter), ("RawDeployment", StandardRouter),
                                       ("local", LocalRouter)])
def test_factory_picks_one_router_per_mode(name, cls):
    assert type(make_router(name)) is cls


def test_factory_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="unknown traffic router 'istio'; known: serverless, standard, local"):
        make_router("istio")


def test_standard_promotion_keeps_the_canarys_predictor_name():
    """KServe inference_service.go: "To promote a canary without restart, set predictor.name to the canary name"."""
    backend, hooks = FakeKServeBackend(), RecordingHooks()
    backend.apply(render_isvc(service("1", DeploymentMode.STANDARD)))
    ctrl = make(backend, ScriptedMetrics(backend, NAME, NS), hooks, mode=DeploymentMode.STANDARD)
    canary = None
    now = T0
    for _ in range(200):
        out = ctrl.step(now)
        obj = backend.get(NAME, NS)
        if obj["spec"].get("canary"):
            canary = obj["spec"]["canary"][0]["predictor"]
        if out.done:
            break
        now += max(out.next_check_s, 0.1)
    assert out.result == "promoted" and canary is not None
    promoted = backend.get(NAME, NS)["spec"]
    assert "canary" not in promoted
    assert canary["name"] == "v2" and promoted["predictor"] == canary  # same name, same spec: no new Deployment


def test_serverless_bake_rollback_is_one_write_back_to_the_previous_revision(backend, hooks):
    metrics = ScriptedMetrics(backend, NAME, NS)
    ctrl = make(backend, metrics, hooks, bake_s=30)
    now = T0
    while True:
        now += max(ctrl.step(now).next_check_s, 0.1)
        state = RolloutState.from_obj(backend.get(NAME, NS))
        if state and state.phase is RolloutPhase.BAKING and hooks.kinds == ["promoted"]:
            break
    v1_rev = backend.get(NAME, NS)["status"]["components"]["predictor"]["previousRolledoutRevision"]
    revisions = len(backend.standin.revisions(NS, NAME))
    metrics.profiles["2"] = SLOW
    while True:
        writes = len(backend.writes)
        out = ctrl.step(now)
        now += max(out.next_check_s, 0.1)
        if out.action == "rolling_back":
            break
    assert len(backend.writes) == writes + 1, "the rollback is a single write"
    assert len(backend.standin.revisions(NS, NAME)) == revisions, "no new (cold) revision to take the traffic"
    traffic = backend.traffic(NAME, NS)
    assert traffic.get(v1_rev) == 100, traffic  # the previous revision serves everything at once
    trace, _ = drive(ctrl, backend, now)
    assert trace[-1][0].result == "rolled_back" and served_version(backend) == "1"
    assert "canaryTrafficPercent" not in backend.get(NAME, NS)["spec"]["predictor"]
