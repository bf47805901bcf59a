"""RolloutController.step(): weights after each call, verdicts, policies, lease, restarts."""

from __future__ import annotations

import copy
import json

import pytest

from serving.backends.base import Conflict
from serving.isvc import DeploymentMode, render_isvc
from serving.rollout.analysis import AnalysisPolicy
from serving.rollout.controller import RolloutController, RolloutRefused, RolloutSpecError, predictor_version
from serving.rollout.state import LEASE_ANNOTATION, STATE_ANNOTATION, RolloutPhase, RolloutState
from serving.rollout.strategy import InconclusivePolicy, RolloutStrategy, StrategyError, parse_steps
from tests.support.rollout_fakes import (
    ERRORS, NAME, NS, SILENT, SLOW, FakeKServeBackend, RecordingHooks, ScriptedMetrics, service, strategy,
)



T0 = 1_000_000.0


def spec_weight(backend: FakeKServeBackend) -> int | None:
    obj = backend.get(NAME, NS)
    if obj["spec"].get("canary"):
        return obj["spec"]["canary"][0]["trafficPercent"]
    return obj["spec"]["predictor"].get("canaryTrafficPercent")


def drive(ctrl: RolloutController, backend: FakeKServeBackend, now: float = T0, max_ticks: int = 200):
    """Call step() until done; returns [(outcome, spec weight, now)] and the final time."""
    trace = []
    for _ in range(max_ticks):
        out = ctrl.step(now)
        trace.append((out, spec_weight(backend), now))
        if out.done:
            return trace, now
        now += max(out.next_check_s, 0.1)
    raise AssertionError(f"rollout did not finish in {max_ticks} ticks: {[t[0].action for t in trace[-5:]]}")


def make(backend, metrics, hooks, version="2", **kw) -> RolloutController:
    mode = kw.pop("mode", DeploymentMode.SERVERLESS)
    holder = kw.pop("holder", "ctrl-a")
    return RolloutController(backend, service(version, mode), strategy(**kw), metrics, hooks=hooks, holder=holder)


def served_version(backend) -> str:
    return predictor_version(backend.get(NAME, NS)["spec"]["predictor"])


# ---------------------------------------------------------------- happy path


def test_good_version_steps_through_every_weight_then_promotes(backend, metrics, hooks):
    ctrl = make(backend, metrics, hooks)
    trace, _ = drive(ctrl, backend)
    actions = [(o.action, w) for o, w, _ in trace if o.action in ("started", "advanced", "promoted", "done")]
    assert actions == [("started", 10), ("advanced", 25), ("advanced", 50), ("advanced", 100), ("promoted", None), ("done", None)]
    obj = backend.get(NAME, NS)
    assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
    assert served_version(backend) == "2"
    assert LEASE_ANNOTATION not in obj["metadata"]["annotations"]
    state = RolloutState.from_obj(obj)
    assert state.phase is RolloutPhase.PROMOTED and not state.hooks_pending
    assert [i["weight"] for i in state.intervals] == [10, 25, 50, 100]
    assert all(i["phase"] == "Successful" for i in state.intervals)
    assert state.intervals[-1]["stable_from_baseline"] is True  # stable has no traffic at 100%
    assert hooks.kinds == ["promoted"]
    assert hooks.events[0][1].version == "2" and hooks.events[0][1].previous_version == "1"
    ps_traffic = backend.traffic(NAME, NS)
    assert list(ps_traffic.values())[0] == 100
    assert trace[-1][0].result == "promoted"


def test_weights_after_each_call_flagger_style(backend, metrics, hooks):
    ctrl = make(backend, metrics, hooks, steps=(20, 100))
    now = T0
    expected = [
        ("started", 20),  # canary written at the first step
        ("waiting", 20),  # canary ready: the interval starts
        ("waiting", 20),  # interval not over yet
    ]
    for action, weight in expected:
        out = ctrl.step(now)
        assert (out.action, spec_weight(backend)) == (action, weight)
        now += 5
    now += 5
    out = ctrl.step(now)
    assert (out.action, out.weight, spec_weight(backend)) == ("advanced", 100, 100)
    assert out.analysis["phase"] == "Successful"


def test_every_written_object_validates_and_traffic_matches_spec(backend, metrics, hooks):
    ctrl = make(backend, metrics, hooks)
    drive(ctrl, backend)
    from serving.isvc import validate_isvc

    for written in backend.writes:
        validate_isvc(written)
    weights = [w["spec"]["predictor"].get("canaryTrafficPercent") for w in backend.writes[1:]]
    assert [w for i, w in enumerate(weights) if w is not None and (i == 0 or weights[i - 1] != w)] == [10, 25, 50, 100]


# ------------------------------------------------------------------ rollback


@pytest.mark.parametrize("profile,needle", [(SLOW, "latency"), (ERRORS, "error rate")])
def test_regression_rolls_back_at_first_step(backend, hooks, profile, needle):
    metrics = ScriptedMetrics(backend, NAME, NS, {"2": profile})
    ctrl = make(backend, metrics, hooks)
    trace, _ = drive(ctrl, backend)
    rollback = next(o for o, _, _ in trace if o.action == "rolling_back")
    assert rollback.analysis["phase"] == "Failed"
    assert needle in rollback.message
    assert "at 10%" in rollback.message
    # traffic left the canary in the same write: previous spec with canaryTrafficPercent 0
    write = next(w for w in backend.writes if w["spec"]["predictor"].get("canaryTrafficPercent") == 0)
    assert predictor_version(write["spec"]["predictor"]) == "1"
    obj = backend.get(NAME, NS)
    assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
    assert served_version(backend) == "1"
    assert RolloutState.from_obj(obj).phase is RolloutPhase.ROLLED_BACK
    assert hooks.kinds == ["rolled_back"]
    assert needle in hooks.events[0][1].reason
    assert trace[-1][0].result == "rolled_back"
    assert max(w for _, w, _ in trace if w is not None) == 10  # never went past the first step


def test_failure_limit_tolerates_one_failed_interval(backend, hooks):
    metrics = ScriptedMetrics(backend, NAME, NS, {"2": SLOW})
    ctrl = make(backend, metrics, hooks, failure_limit=2)
    trace, _ = drive(ctrl, backend)
    analysed = [o for o, _, _ in trace if o.analysis]
    assert analysed[0].action == "analysed" and "(1/2)" in analysed[0].message
    assert analysed[1].action == "rolling_back"
    assert trace[-1][0].result == "rolled_back"


def test_metrics_provider_outage_is_an_error_verdict_and_rolls_back(backend, hooks):
    metrics = ScriptedMetrics(backend, NAME, NS)
    metrics.unavailable = "prometheus at http://127.0.0.1:1 refused the connection"
    ctrl = make(backend, metrics, hooks)
    trace, _ = drive(ctrl, backend)
    rb = next(o for o, _, _ in trace if o.action == "rolling_back")
    assert rb.analysis["phase"] == "Error" and "refused the connection" in rb.message
    assert served_version(backend) == "1"


def test_a_failed_canary_revision_rolls_back_at_once_with_the_condition_reason(backend, metrics, hooks):
    backend.standin.fail_version("2", "container exited with code 1: safetensors header is corrupt")
    ctrl = make(backend, metrics, hooks, ready_timeout_s=600)
    trace, end = drive(ctrl, backend)
    rb = next(o for o, _, _ in trace if o.action == "rolling_back")
    assert "failed at 10%" in rb.message and "safetensors header is corrupt" in rb.message
    assert not [o for o, _, _ in trace if o.action == "waiting" and "not ready after" in o.message]
    assert served_version(backend) == "1" and trace[-1][0].result == "rolled_back"
    assert hooks.kinds == ["rolled_back"]


# -------------------------------------------------------------- inconclusive


def test_silent_canary_hold_then_rollback(backend, hooks):
    metrics = ScriptedMetrics(backend, NAME, NS, {"2": SILENT})
    ctrl = make(backend, metrics, hooks, on_inconclusive=InconclusivePolicy.HOLD, max_inconclusive=3,
                analysis_policy=AnalysisPolicy(min_requests=10, max_intervals_per_step=1))
    trace, _ = drive(ctrl, backend)
    held = [o for o, _, _ in trace if o.action == "analysed"]
    assert [("holding" in o.message) for o in held] == [True, True]
    rb = next(o for o, _, _ in trace if o.action == "rolling_back")
    assert "inconclusive for 3 intervals" in rb.message and "too little traffic" in rb.message
    assert trace[-1][0].result == "rolled_back"


def test_silent_canary_rollback_policy_rolls_back_at_once(backend, hooks):
    metrics = ScriptedMetrics(backend, NAME, NS, {"2": SILENT})
    ctrl = make(backend, metrics, hooks, on_inconclusive="rollback", analysis_policy=AnalysisPolicy(min_requests=10, max_intervals_per_step=1))
    trace, _ = drive(ctrl, backend)
    analysed = [o for o, _, _ in trace if o.analysis]
    assert len(analysed) == 1 and analysed[0].action == "rolling_back"
    assert "inconclusive at 10%" in analysed[0].message


def test_silent_canary_promote_policy_promotes(backend, hooks):
    metrics = ScriptedMetrics(backend, NAME, NS, {"2": SILENT})
    ctrl = make(backend, metrics, hooks, on_inconclusive="promote", analysis_policy=AnalysisPolicy(min_requests=10, max_intervals_per_step=1))
    trace, _ = drive(ctrl, backend)
    assert trace[-1][0].result == "promoted" and served_version(backend) == "2"
    assert hooks.kinds == ["promoted"]


def test_intervals_per_step(backend, metrics, hooks):
    ctrl = make(backend, metrics, hooks, steps=(50, 100), intervals_per_step=2)
    trace, _ = drive(ctrl, backend)
    state = RolloutState.from_obj(backend.get(NAME, NS))
    assert [i["weight"] for i in state.intervals] == [50, 50, 100, 100]


# ------------------------------------------------------------------- bake


def test_bake_window_regression_rolls_back_and_moves_alias_back(backend, hooks):
    metrics = ScriptedMetrics(backend, NAME, NS)
    ctrl = make(backend, metrics, hooks, bake_s=30)
    now = T0
    while True:
        out = ctrl.step(now)
        now += max(out.next_check_s, 0.1)
        if RolloutState.from_obj(backend.get(NAME, NS)).phase is RolloutPhase.BAKING and hooks.kinds == ["promoted"]:
            break
    assert served_version(backend) == "2"
    metrics.profiles["2"] = SLOW  # regression shows up after promotion
    trace, _ = drive(ctrl, backend, now)
    rb = next(o for o, _, _ in trace if o.action == "rolling_back")
    assert "during the bake window" in rb.message
    assert served_version(backend) == "1"
    assert "canaryTrafficPercent" not in backend.get(NAME, NS)["spec"]["predictor"]
    assert hooks.kinds == ["promoted", "rolled_back"]
    assert hooks.events[1][1].alias_moved is True


def test_bake_window_passes(backend, metrics, hooks):
    ctrl = make(backend, metrics, hooks, bake_s=25)
    trace, _ = drive(ctrl, backend)
    assert trace[-1][0].result == "promoted"
    state = RolloutState.from_obj(backend.get(NAME, NS))
    assert [i["bake"] for i in state.intervals].count(True) >= 2


# --------------------------------------------------------- standard mode


def test_standard_mode_canary_entry_promote():
    backend = FakeKServeBackend()
    backend.apply(render_isvc(service("1", DeploymentMode.STANDARD)))
    hooks = RecordingHooks()
    ctrl = make(backend, ScriptedMetrics(backend, NAME, NS), hooks, mode=DeploymentMode.STANDARD)
    trace, _ = drive(ctrl, backend)
    weights = []
    for _, w, _ in trace:
        if w is not None and (not weights or weights[-1] != w):
            weights.append(w)
    assert weights == [10, 25, 50, 100]
    obj = backend.get(NAME, NS)
    assert "canary" not in obj["spec"] and served_version(backend) == "2"
    assert hooks.kinds == ["promoted"]


def test_standard_mode_rollback_removes_the_entry():
    backend = FakeKServeBackend()
    backend.apply(render_isvc(service("1", DeploymentMode.STANDARD)))
    backend.standin.fail_version("2", "ImagePullBackOff: manifest unknown")
    hooks = RecordingHooks()
    ctrl = make(backend, ScriptedMetrics(backend, NAME, NS), hooks, mode=DeploymentMode.STANDARD, ready_timeout_s=5)
    trace, _ = drive(ctrl, backend)
    obj = backend.get(NAME, NS)
    assert "canary" not in obj["spec"] and served_version(backend) == "1"
    assert "ImagePullBackOff" in hooks.events[0][1].reason


# --------------------------------------------------------------- lease


def test_second_controller_is_refused_while_the_lease_is_held(backend, metrics, hooks):
    a = make(backend, metrics, hooks, holder="ctrl-a")
    a.step(T0)
    b = make(backend, metrics, hooks, holder="ctrl-b")
    with pytest.raises(RolloutRefused, match=r"controller 'ctrl-a' holds the rollout lease \(rollout of v2, Progressing\)"):
        b.step(T0 + 1)
    c = make(backend, metrics, hooks, version="3", holder="ctrl-c")
    with pytest.raises(RolloutRefused, match="holds the rollout lease"):
        c.step(T0 + 1)


def test_other_version_refused_even_after_lease_expiry(backend, metrics, hooks):
    make(backend, metrics, hooks, holder="ctrl-a").step(T0)
    c = make(backend, metrics, hooks, version="3", holder="ctrl-c")
    with pytest.raises(RolloutRefused, match=r"a rollout of v2 is Progressing; resume it"):
        c.step(T0 + 61)


def test_expired_lease_is_taken_over(backend, metrics, hooks):
    make(backend, metrics, hooks, holder="ctrl-a").step(T0)
    b = make(backend, metrics, hooks, holder="ctrl-b")
    trace, _ = drive(b, backend, T0 + 61)
    assert trace[-1][0].result == "promoted"
    assert hooks.kinds == ["promoted"]


def test_a_controller_that_gives_up_releases_its_lease_and_another_resumes_at_once(backend, metrics, hooks):
    """``--timeout`` (or Ctrl-C): the state stays, the lease goes, so CI's next job need not wait out the TTL."""
    from serving.rollout.runner import run_rollout

    clock = iter(T0 + i for i in range(10_000))
    a = make(backend, metrics, hooks, holder="ctrl-a")
    result = run_rollout(a, clock=lambda: next(clock), sleep=lambda s: None, max_duration_s=3)
    assert result.outcome == "error" and "lease released" in result.reason, result.reason
    obj = backend.get(NAME, NS)
    assert LEASE_ANNOTATION not in obj["metadata"].get("annotations", {})
    assert RolloutState.from_obj(obj).phase is RolloutPhase.PROGRESSING
    b = make(backend, metrics, hooks, holder="ctrl-b")
    trace, _ = drive(b, backend, T0 + 5)  # well inside ctrl-a's lease TTL
    assert trace[-1][0].result == "promoted"


def test_sigterm_stops_the_controller_and_releases_its_lease(backend, metrics, hooks):
    """A cancelled CI job or a deleted pod (SIGTERM) releases the lease as Ctrl-C does."""
    import os
    import signal

    from serving.rollout.runner import run_rollout

    a = make(backend, metrics, hooks, holder="ctrl-a")
    clock = iter(T0 + i for i in range(10_000))
    ticks = []

    def sleep(_s):
        ticks.append(1)
        if len(ticks) == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(KeyboardInterrupt):
        run_rollout(a, clock=lambda: next(clock), sleep=sleep)
    assert LEASE_ANNOTATION not in backend.get(NAME, NS)["metadata"].get("annotations", {})
    from serving.rollout import runner

    assert signal.getsignal(signal.SIGTERM) is not runner._terminated  # the previous handler is back


def test_concurrent_write_conflict_is_retried(backend, metrics, hooks):
    ctrl = make(backend, metrics, hooks)
    backend.fail_next_apply = Conflict("the object has been modified")
    out = ctrl.step(T0)
    assert out.action == "conflict"
    trace, _ = drive(ctrl, backend, T0 + 1)
    assert trace[-1][0].result == "promoted"


def test_hook_failure_is_retried_and_alias_still_moves(backend, metrics):
    hooks = RecordingHooks(fail_times=2)
    ctrl = make(backend, metrics, hooks)
    trace, _ = drive(ctrl, backend)
    assert sum(1 for o, _, _ in trace if o.action == "hooks" and "retrying" in o.message) == 2
    assert hooks.kinds == ["promoted"]


# ------------------------------------------------------------ restarts


def _snapshots(profile, mode=DeploymentMode.SERVERLESS) -> list[dict]:
    backend = FakeKServeBackend()
    backend.apply(render_isvc(service("1", mode)))
    metrics = ScriptedMetrics(backend, NAME, NS, {"2": profile} if profile else {})
    ctrl = make(backend, metrics, RecordingHooks(), mode=mode)
    snaps, now = [], T0
    seen = set()
    for _ in range(200):
        out = ctrl.step(now)
        obj = backend.get(NAME, NS)
        rv = obj["metadata"]["resourceVersion"]
        if rv not in seen:
            seen.add(rv)
            snaps.append((copy.deepcopy(obj), copy.deepcopy((backend.standin._services, backend.standin.revision_versions)), now))
        if out.done:
            break
        now += max(out.next_check_s, 0.1)
    return snaps


@pytest.mark.parametrize("mode", [DeploymentMode.SERVERLESS, DeploymentMode.STANDARD], ids=["serverless", "standard"])
@pytest.mark.parametrize("profile,expected", [(None, "promoted"), (SLOW, "rolled_back")], ids=["good", "regressed"])
def test_restart_from_every_persisted_state_converges(profile, expected, mode):
    snaps = _snapshots(profile, mode)
    phases = {RolloutState.from_obj(o).phase for o, _, _ in snaps if RolloutState.from_obj(o)}
    assert RolloutPhase.PROGRESSING in phases
    if profile and mode is DeploymentMode.SERVERLESS:
        assert RolloutPhase.ROLLING_BACK in phases
    for obj, services, t in snaps:
        backend = FakeKServeBackend()
        backend.put_raw(obj)
        backend.rv = int(obj["metadata"]["resourceVersion"])
        backend.standin._services, backend.standin.revision_versions = copy.deepcopy(services)
        hooks = RecordingHooks()
        metrics = ScriptedMetrics(backend, NAME, NS, {"2": profile} if profile else {})
        restarted = make(backend, metrics, hooks, holder="ctrl-restarted", mode=mode)
        trace, _ = drive(restarted, backend, t + 61)  # after the dead controller's lease expired
        final = backend.get(NAME, NS)
        state = RolloutState.from_obj(final)
        assert trace[-1][0].result == expected, (RolloutState.from_obj(obj).phase, trace[-1][0])
        assert "canaryTrafficPercent" not in final["spec"]["predictor"] and not final["spec"].get("canary")
        assert served_version(backend) == ("2" if expected == "promoted" else "1")
        assert not state.hooks_pending and state.phase.terminal
        if mode is DeploymentMode.SERVERLESS:
            assert list(backend.traffic(NAME, NS).values())[0] == 100
        before = RolloutState.from_obj(obj)
        if before is not None and not (before.phase.terminal and not before.hooks_pending):
            assert hooks.kinds == (["promoted"] if expected == "promoted" else ["rolled_back"])


# ------------------------------------------------------------ start cases


def test_first_deployment_creates_the_service_and_names_the_champion(metrics, hooks):
    backend = FakeKServeBackend()
    ctrl = RolloutController(backend, service("1"), strategy(), ScriptedMetrics(backend, NAME, NS), hooks=hooks)
    trace, _ = drive(ctrl, backend)
    assert trace[0][0].action == "created" and trace[-1][0].result == "promoted"
    assert served_version(backend) == "1" and hooks.kinds == ["promoted"]


def test_rolling_out_the_serving_version_is_a_no_op(backend, metrics, hooks):
    ctrl = make(backend, metrics, hooks, version="1")
    trace, _ = drive(ctrl, backend)
    assert trace[0][0].action == "already_serving" and trace[-1][0].result == "promoted"
    assert "canaryTrafficPercent" not in backend.get(NAME, NS)["spec"]["predictor"]


def test_unknown_canary_in_spec_is_refused(backend, metrics, hooks):
    obj = backend.get(NAME, NS)
    obj["spec"]["predictor"]["canaryTrafficPercent"] = 30
    backend.apply(obj)
    with pytest.raises(RolloutSpecError, match="canaryTrafficPercent is set to 30 outside a recorded rollout"):
        make(backend, metrics, hooks).step(T0)


def test_target_without_version_is_refused(backend, metrics):
    from serving.isvc import PredictorSpec, ServiceSpec

    svc = ServiceSpec(name=NAME, namespace=NS, predictor=PredictorSpec(storage_uri="pvc://m/x"))
    with pytest.raises(RolloutSpecError, match="--model-version"):
        RolloutController(backend, svc, strategy(), metrics)


def test_corrupt_state_annotation_says_how_to_fix(backend, metrics, hooks):
    obj = backend.get(NAME, NS)
    obj["metadata"]["annotations"][STATE_ANNOTATION] = "{not json"
    backend.apply(obj)
    with pytest.raises(ValueError, match="kubectl annotate isvc"):
        make(backend, metrics, hooks).step(T0)


# ------------------------------------------------------------- strategy


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"steps": (10, 50)}, "the last step must be 100"),
        ({"steps": (50, 25, 100)}, "strictly increasing"),
        ({"steps": (0, 100)}, "1..100"),
        ({"steps": ()}, "at least one step"),
        ({"interval_s": 0}, "interval_s: must be > 0"),
        ({"failure_limit": 0}, "failure_limit: must be >= 1"),
        ({"on_inconclusive": "maybe"}, "unknown policy 'maybe'; use one of pause, rollback, hold, promote"),
        ({"lease_ttl_s": 5, "interval_s": 10}, "shorter than one interval"),
        ({"bake_s": -1}, "bake_s"),
    ],
)
def test_strategy_refuses_impossible_settings(kw, message):
    with pytest.raises(StrategyError, match=message.replace("(", r"\(").replace(".", r"\.")):
        RolloutStrategy(**kw).validate()


def test_parse_steps():
    assert parse_steps("10, 25,50,100") == (10, 25, 50, 100)
    with pytest.raises(StrategyError, match="comma-separated list of integers"):
        parse_steps("10,half,100")


def test_state_round_trips():
    s = RolloutState(rollout_id="x", target_version="2", previous_version="1", mode="Serverless",
                     intervals=({"weight": 10},), hooks_pending=("promote",))
    assert RolloutState.from_json(s.to_json()) == s
    assert json.loads(s.to_json())["phase"] == "Progressing"


def test_warmup_delays_the_first_interval(backend, metrics, hooks):
    ctrl = make(backend, metrics, hooks, warmup_s=15)
    assert ctrl.step(T0).action == "started"
    out = ctrl.step(T0 + 1)
    assert out.message.startswith("canary ready; warming up for 15s")
    assert ctrl.step(T0 + 5).message == "canary warming up"
    out = ctrl.step(T0 + 16)
    assert out.message.endswith("analysis interval started")
    state = RolloutState.from_obj(backend.get(NAME, NS))
    assert state.interval_start == T0 + 16


# ------------------------------------------------------------ quality probe


def test_quality_at_full_traffic_probes_the_canary_alone_against_the_last_stable_score(backend, metrics, hooks):
    """At 100% the stable revision need not keep a route: its score comes from the previous interval."""
    from serving.rollout.quality import QualityResult

    calls = []

    def prober(canary_url, stable_url):
        calls.append((canary_url, stable_url))
        return QualityResult(canary_score=0.8, stable_score=None if stable_url is None else 0.9, n=10, failures=[])

    ctrl = RolloutController(backend, service("2"), strategy(steps=(50, 100)), metrics, hooks=hooks, holder="q",
                             quality=prober)
    trace, _ = drive(ctrl, backend)
    assert trace[-1][0].result == "promoted"
    assert [stable is None for _, stable in calls] == [False, True]
    state = RolloutState.from_obj(backend.get(NAME, NS))
    assert [i["quality"]["stable_score"] for i in state.intervals] == [0.9, 0.9]


def test_quality_drop_at_full_traffic_still_rolls_back(backend, metrics, hooks):
    from serving.rollout.quality import QualityResult

    scores = iter([0.9, 0.2])  # fine at 50%, much worse once it takes all traffic

    def prober(canary_url, stable_url):
        return QualityResult(canary_score=next(scores), stable_score=None if stable_url is None else 0.9, n=10,
                             failures=[])

    ctrl = RolloutController(backend, service("2"), strategy(steps=(50, 100)), metrics, hooks=hooks, holder="q",
                             quality=prober)
    trace, _ = drive(ctrl, backend)
    assert trace[-1][0].result == "rolled_back"
    assert served_version(backend) == "1"


def test_a_canary_onto_a_runtime_with_other_openai_routes_is_refused_before_any_change(backend, metrics, hooks):
    """llmops (/openai/v1) -> vLLM's own server (/v1): half of every client's requests would 404 on one arm."""
    import dataclasses

    spec = service("2")
    spec = dataclasses.replace(spec, predictor=dataclasses.replace(spec.predictor, serving_runtime="vllm", gpus=1,
                                                                   node_selector=(("nvidia.com/gpu.present", "true"),)))
    before = backend.get(NAME, NS)
    ctrl = RolloutController(backend, spec, strategy(), metrics, hooks=hooks, holder="ctrl-a")
    with pytest.raises(RolloutSpecError, match=r"answers OpenAI requests at /v1, the serving one at /openai/v1"):
        ctrl.step(T0)
    assert backend.get(NAME, NS)["spec"] == before["spec"]
    assert hooks.kinds == []


def test_a_long_rollout_state_fits_the_annotation_budget():
    """40 interval records of a real rollout ran to ~280 KB; Kubernetes refuses annotations past 256 KiB."""
    from serving.rollout.state import STATE_BUDGET_BYTES

    record = {"checks": [{"name": f"check{i}", "reason": "x" * 600, "details": {"bounds": list(range(40))}}
                         for i in range(8)]}  # fmt: skip  (about 7 KB, as a judged interval with its evidence)
    records = tuple(record | {"step": i} for i in range(60))
    s = RolloutState(rollout_id="r", target_version="2", previous_version="1", mode="Serverless", intervals=records)
    text = s.to_json()
    assert len(text.encode()) <= STATE_BUDGET_BYTES
    back = RolloutState.from_json(text)
    assert back.intervals[-1]["step"] == 59 and 10 < len(back.intervals) < 40  # the newest kept, in order
    assert [r["step"] for r in back.intervals] == list(range(60 - len(back.intervals), 60))
    assert back.intervals_dropped == 60 - len(back.intervals)
    again = RolloutState.from_json(back.evolve(intervals=back.intervals + (record | {"step": 60},)).to_json())
    assert again.intervals[-1]["step"] == 60 and again.intervals_dropped == 61 - len(again.intervals)
