"""The controller behind its analysis seam: one sequential judge per rollout, arms by revision, traffic-aware."""

from __future__ import annotations

import dataclasses

from serving.isvc import DeploymentMode, PredictorSpec, ServiceSpec
from serving.metrics.base import MetricsUnavailable, RevisionMetrics
from serving.rollout.analysis import AnalysisPolicy
from serving.rollout.controller import RolloutController
from serving.rollout.state import RolloutState
from tests.support.rollout_fakes import (
    GOOD, NAME, NS, SILENT, SLOW, ScriptedMetrics, service, strategy, traffic_shares,
)

T0 = 1_000_000.0


def run(ctrl, now=T0, ticks=400, until=None):
    trace = []
    for _ in range(ticks):
        out = ctrl.step(now)
        trace.append(out)
        if out.done or (until and until(out)):
            return trace, now
        now += max(out.next_check_s, 0.1)
    return trace, now


class ByRevision(ScriptedMetrics):
    """Metrics keyed by *revision* (``target.revision``), as the PodMonitor's ``revision`` label gives them."""

    def __init__(self, backend, profiles_by_revision):
        super().__init__(backend, NAME, NS)
        self.by_revision = profiles_by_revision

    def collect(self, target, start, end) -> RevisionMetrics:
        self.calls.append((target, start, end))
        shares = traffic_shares(self.backend.get(NAME, NS))
        profile = self.by_revision.get(target.revision, GOOD)
        n = int(self.rps * max(0.0, end - start) * shares.get(target.revision, 0) / 100)
        from tests.support.rollout_fakes import _histogram

        return RevisionMetrics(target, start, end, n, int(round(n * profile.error_rate)),
                               _histogram(n, profile.latency_s), _histogram(n, profile.latency_s / 4))


def test_rerolling_the_same_version_with_a_new_spec_compares_two_revisions(backend, hooks):
    # v1 again, with new runtime arguments: same model_version label, a new revision that is slower
    rerolled = ServiceSpec(NAME, NS, PredictorSpec(storage_uri="pvc://models/v1", model_version="1", cpu="1",
                                                   memory="1Gi", args=("--max_batch_size=1",)))
    metrics = ByRevision(backend, {"llm-predictor-00002": SLOW})
    ctrl = RolloutController(backend, rerolled, strategy(), metrics, hooks=hooks, holder="c")
    trace, _ = run(ctrl)
    assert trace[-1].result == "rolled_back", [o.message for o in trace[-3:]]
    revisions = {t.revision for t, _, _ in metrics.calls}
    assert {"llm-predictor-00001", "llm-predictor-00002"} <= revisions
    assert {t.model_version for t, _, _ in metrics.calls} == {"1"}
    assert "latency" in trace[-1].message or "latency" in ctrl.last_state.reason


def test_standard_mode_selects_arms_by_deployment(hooks):
    """Standard mode's arms are the predictors' Deployments (the kit's PodMonitor labels their pods' series)."""
    from serving.isvc import render_isvc
    from tests.support.rollout_fakes import FakeKServeBackend

    backend = FakeKServeBackend()
    backend.apply(render_isvc(service("1", DeploymentMode.STANDARD)))
    metrics = ScriptedMetrics(backend, NAME, NS)
    ctrl = RolloutController(backend, service("2", DeploymentMode.STANDARD), strategy(), metrics, hooks=hooks, holder="c")
    trace, _ = run(ctrl)
    assert trace[-1].result == "promoted"
    arms = {(t.model_version, t.revision) for t, _, _ in metrics.calls}
    assert ("2", f"{NAME}-v2-predictor") in arms and ("1", f"{NAME}-predictor") in arms
    assert {t.revision for t, _, _ in metrics.calls} == {f"{NAME}-v2-predictor", f"{NAME}-predictor"}


def test_quiet_canary_pauses_and_is_never_rolled_back_then_promotes_when_traffic_comes(backend, hooks):
    metrics = ScriptedMetrics(backend, NAME, NS, {"2": SILENT})
    policy = AnalysisPolicy(min_requests=10, max_intervals_per_step=2, probe_budget=0)
    ctrl = RolloutController(backend, service("2"), strategy(analysis_policy=policy), metrics, hooks=hooks, holder="c")
    trace, now = run(ctrl, ticks=120)
    actions = [o.action for o in trace]
    assert "paused" in actions and "rolling_back" not in actions and not trace[-1].done
    paused = next(o for o in trace if o.action == "paused")
    assert "never rolled back for low traffic" in paused.message and paused.weight == 10
    metrics.profiles["2"] = GOOD  # traffic arrives: the judge completes the step and the rollout goes on
    trace, _ = run(ctrl, now)
    assert trace[-1].result == "promoted"
    assert hooks.kinds == ["promoted"]


def test_collecting_evidence_stays_on_the_step_without_counting_as_inconclusive(backend, hooks):
    metrics = ScriptedMetrics(backend, NAME, NS, rps=2.0)  # 2 req/s x 10 s x 10% = 2 canary requests per interval
    policy = AnalysisPolicy(min_requests=6, max_intervals_per_step=10)
    ctrl = RolloutController(backend, service("2"), strategy(analysis_policy=policy, steps=(10, 100)), metrics,
                             hooks=hooks, holder="c")
    trace, _ = run(ctrl, until=lambda o: o.action == "advanced")
    at10 = [o for o in trace if o.analysis]
    assert [o.action for o in at10] == ["analysed", "analysed", "advanced"]
    assert all("collecting evidence" in o.message for o in at10[:2])
    state = RolloutState.from_obj(backend.get(NAME, NS))
    assert state.inconclusive == 0 and [r["decided"] for r in state.intervals] == [False, False, True]
    # the accumulator travels on the newest record only (annotation budget), the evidence per check on all
    assert "judge" not in state.intervals[0] and "judge" in state.intervals[-1]
    assert all(r["checks"] for r in state.intervals)


def test_transient_metrics_errors_are_tolerated_persistent_ones_abort_as_blindness(backend, hooks):
    metrics = ScriptedMetrics(backend, NAME, NS)

    class Flaky(type(metrics)):
        fail_next = 0

        def collect(self, target, start, end):
            if self.fail_next > 0:
                self.fail_next -= 1
                raise MetricsUnavailable("Prometheus at http://prom:9090 answered HTTP 503")
            return super().collect(target, start, end)

    flaky = Flaky(backend, NAME, NS)
    policy = AnalysisPolicy(min_requests=10, provider_retries=1, max_provider_errors=1)
    ctrl = RolloutController(backend, service("2"), strategy(analysis_policy=policy), flaky, hooks=hooks, holder="c")
    started = lambda o: "interval started" in o.message  # noqa: E731
    analysed = lambda o: o.analysis is not None  # noqa: E731
    trace, now = run(ctrl, until=analysed)
    assert trace[-1].action == "advanced"
    trace, now = run(ctrl, now + 0.1, until=started)
    flaky.fail_next = 1  # one failed query: the immediate retry succeeds, no interval lost
    trace, now = run(ctrl, now + 0.1, until=analysed)
    assert trace[-1].action == "advanced", trace[-1].message
    trace, now = run(ctrl, now + 0.1, until=started)
    flaky.fail_next = 2  # a whole interval blind (query + retry): tolerated once
    trace, now = run(ctrl, now + 0.1, until=analysed)
    assert trace[-1].action == "analysed" and "tolerated" in trace[-1].message
    flaky.fail_next = 10**6  # the provider stays down
    trace, _ = run(ctrl, now)
    assert trace[-1].result == "rolled_back"
    reason = ctrl.last_state.reason
    assert "could not see" in reason and "HTTP 503" in reason and "nothing about the canary" in reason


def test_every_interval_record_carries_the_verdicts_evidence(backend, hooks):
    metrics = ScriptedMetrics(backend, NAME, NS, {"2": SLOW})
    ctrl = RolloutController(backend, service("2"), strategy(), metrics, hooks=hooks, holder="c")
    trace, _ = run(ctrl)
    report = ctrl.report_data()
    failed = next(r for r in report["intervals"] if r["phase"] == "Failed")
    check = next(c for c in failed["checks"] if c["phase"] == "Failed")
    assert {"e_value", "e_threshold", "always_valid_p"} <= set(check["details"])
    assert failed["canary_revision"] == "llm-predictor-00002" and failed["stable_revision"] == "llm-predictor-00001"
    from serving.rollout.report import render_markdown

    md = render_markdown(report)
    assert "## Evidence" in md and check["name"] in md and "reject at" in md


def test_strategy_default_is_pause():
    assert dataclasses.fields(type(strategy()))  # sanity
    from serving.rollout.strategy import InconclusivePolicy, RolloutStrategy

    assert RolloutStrategy().inconclusive_policy is InconclusivePolicy.PAUSE
