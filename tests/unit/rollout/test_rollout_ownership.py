"""A controller reports only its own version's outcome (issue 12 defect 7).

* v3 finding v2's finished rollout with a registry update still pending finishes
  that update for v2, then canaries v3: it never exits "promoted" for v3 on v2's verdict.
* A first deployment that never becomes ready is terminal and owes nothing, so the
  next version deploys in its place instead of being blocked by a pending hook.
"""

from __future__ import annotations

from serving.rollout.controller import RolloutController, predictor_version
from serving.rollout.state import RolloutState
from tests.support.rollout_fakes import NAME, NS, FakeKServeBackend, RecordingHooks, ScriptedMetrics, service, strategy
from tests.unit.rollout.test_rollout_controller import T0, drive, make


def test_v3_does_not_adopt_v2s_finished_rollout(backend, metrics, hooks):
    v2 = make(backend, metrics, hooks, version="2")
    now = T0
    while True:  # run v2 to promotion, and stop before its registry hook ran (the controller died)
        out = v2.step(now)
        if out.action == "promoted":
            break
        now += max(out.next_check_s, 0.1)
    assert RolloutState.from_obj(backend.get(NAME, NS)).hooks_pending == ("promote",)

    v3 = make(backend, metrics, hooks, version="3", holder="ctrl-a")
    trace, _ = drive(v3, backend, now + 1)
    final = RolloutState.from_obj(backend.get(NAME, NS))
    assert trace[-1][0].result == "promoted" and final.target_version == "3"
    assert [e.version for _, e in hooks.events] == ["2", "3"], "v2's hook ran once, for v2; then v3 promoted for itself"
    assert any(o.action == "started" for o, _, _ in trace), "v3 went through its own canary"
    assert predictor_version(backend.get(NAME, NS)["spec"]["predictor"]) == "3"


def test_failed_first_deployment_does_not_block_the_next_version():
    backend, hooks = FakeKServeBackend(), RecordingHooks()
    backend.standin.fail_version("1")
    first = RolloutController(backend, service("1"), strategy(ready_timeout_s=5), ScriptedMetrics(backend, NAME, NS), hooks=hooks)
    trace, now = drive(first, backend)
    assert trace[-1][0].result == "error" and hooks.kinds == []
    state = RolloutState.from_obj(backend.get(NAME, NS))
    assert state.failed and not state.hooks_pending

    second = RolloutController(backend, service("2"), strategy(), ScriptedMetrics(backend, NAME, NS), hooks=hooks)
    trace, _ = drive(second, backend, now + 1)
    assert trace[-1][0].result == "promoted", trace[-1][0].message
    assert predictor_version(backend.get(NAME, NS)["spec"]["predictor"]) == "2"
    assert [e.version for _, e in hooks.events] == ["2"]
