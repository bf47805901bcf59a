"""The canary rollout controller: one reconcile tick per :meth:`RolloutController.step`.

Like Flagger's ``advanceCanary``, a tick reads the InferenceService, decides,
and writes at most one change; the clock, backend, metrics provider, quality
probe and registry hooks are injected, and nothing here sleeps (the runner in
:mod:`serving.rollout.runner` loops ticks with a real clock).

Every spec change is written together with the rollout state annotation and
the lease in one guarded replace (``metadata.resourceVersion``), so a
controller killed at any point resumes from what the object says and ends
fully promoted or fully rolled back.

How traffic moves is the traffic router's business (:mod:`serving.routers`, one
implementation per mode, chosen by :func:`serving.routers.factory.make_router`):
Serverless writes ``canaryTrafficPercent``, Standard a ``spec.canary[]`` entry
promoted by keeping its ``predictor.name``. The controller holds no mode branches.

This module is the state machine (start, progress, advance, promote, roll back, bake)
with the lease and the guarded write; as Flagger splits its scheduler, the rest is
mixed in from beside it::

    controller_analysis.py   CanaryAnalysis: metrics windows, baselines, quality probes, the judge's evidence
    controller_hooks.py      HookRunner: registry hooks, the first deployment's wait, the report
    outcome.py               StepOutcome, what one tick saw and did

Errors::

    RolloutError
    ├── RolloutRefused     another controller holds the lease, or another rollout is in progress
    └── RolloutSpecError   the target or the existing service cannot be rolled out (says why)
"""

from __future__ import annotations

from llmops_core.errors import LlmopsError

import copy
import logging
import uuid
from typing import Any, Callable

from llmops_core.faults import kill_point
from serving.backends.base import Conflict, NotFound, PredictorStatus, ServingBackend
from serving.isvc import (
    DEPLOYMENT_MODE_ANNOTATION,
    openai_base_of,
    DeploymentMode,
    IsvcError,
    ServiceSpec,
    render_isvc,
    render_predictor,
    validate_isvc,
)
from serving.metrics.base import MetricsProvider
from serving.rollout.controller_analysis import (  # noqa: F401 (EVIDENCE_KEY re-exported)
    EVIDENCE_KEY,
    CanaryAnalysis,
    QualityProber,
    keep_last_evidence,
)
from serving.rollout.controller_hooks import HookRunner
from serving.rollout.hooks import NoopHooks, RegistryHooks
from serving.rollout.outcome import StepOutcome
from serving.routers.base import MODEL_VERSION_ENV, TrafficRouter, predictor_version, strip_canary  # noqa: F401 (re-exported)
from serving.routers.factory import make_router
from serving.rollout.state import (
    LEASE_ANNOTATION,
    STATE_ANNOTATION,
    Lease,
    RolloutPhase,
    RolloutState,
    spec_hash,
    with_annotations,
)
from serving.rollout.strategy import InconclusivePolicy, RolloutStrategy


log = logging.getLogger(__name__)


class RolloutError(LlmopsError):
    """Base class for rollout controller errors."""


class RolloutRefused(RolloutError):
    """Another controller or another rollout owns this InferenceService."""


class RolloutSpecError(RolloutError):
    """The target or the existing service cannot be rolled out."""


def canary_entry(predictor: dict[str, Any], weight: int, current: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``spec.canary[]`` entry the Standard router writes for ``predictor`` (variant name included)."""
    from serving.routers.standard import StandardRouter

    body: dict[str, Any] = {"spec": {}}
    StandardRouter().start(body, copy.deepcopy(current or {}), predictor, weight)
    return body["spec"]["canary"][0]


class RolloutController(CanaryAnalysis, HookRunner):
    """Drives one InferenceService from its current version to ``service.predictor``.

    Args:
        backend: where the InferenceService lives.
        service: the desired service; its predictor is the new version.
        strategy: the canary plan.
        metrics: reads each revision's serving metrics.
        clock: unix seconds now (only for ids/logs; ticks pass ``now``).
        quality: optional ``(canary_url, stable_url) -> QualityResult`` probe.
        hooks: registry hooks (default: tell nobody).
        holder: lease holder id; a restarted controller may pass the same id.
        model_name: the ``model_name`` label the servers export (default: the service name).
        report_writer: ``(state_dict) -> url`` called before hooks; its URL goes to the registry.
        probe_traffic: ``(canary_url, stable_url, n, stable_n) -> answered``: golden-prompt probes when the
            judge finds real traffic too thin (see :mod:`serving.rollout.sequential`): ``n`` to the canary,
            ``stable_n`` (stable's share of the split, :func:`~serving.rollout.loadgen.probe_split`) to stable.
    """

    def __init__(
        self,
        backend: ServingBackend,
        service: ServiceSpec,
        strategy: RolloutStrategy,
        metrics: MetricsProvider,
        *,
        quality: QualityProber | None = None,
        hooks: RegistryHooks | None = None,
        holder: str | None = None,
        model_name: str | None = None,
        report_writer: Callable[[dict], str | None] | None = None,
        probe_traffic: Callable[[str, str, int], int] | None = None,
    ) -> None:
        strategy.validate()
        service.validate()
        if not service.predictor.model_version:
            raise RolloutSpecError(
                "model_version: the new predictor has no model version; set it (e.g. --model-version 3) "
                "so metrics and the registry can tell canary from stable"
            )
        self.backend = backend
        self.service = service
        self.strategy = strategy
        self.metrics = metrics
        self.quality = quality
        self.hooks = hooks or NoopHooks()
        self.holder = holder or f"llmops-{uuid.uuid4().hex[:10]}"
        self.model_name = model_name or service.name
        self.report_writer = report_writer
        self.probe_traffic = probe_traffic  # (canary_url, stable_url, n, stable_n) -> requests answered
        self._rollout_id: str | None = None  # the rollout this controller drives (started or adopted)
        self._primed: tuple | None = None  # (rollout, step) whose interval this process started
        self.last_state: RolloutState | None = None

    # ------------------------------------------------------------------ public

    @property
    def name(self) -> str:
        return self.service.name

    @property
    def namespace(self) -> str:
        return self.service.namespace

    @property
    def target_version(self) -> str:
        return self.service.predictor.model_version

    def step(self, now: float) -> StepOutcome:
        """Advance the rollout by one reconcile tick.

        Raises:
            RolloutRefused: another controller holds the lease, or a rollout of
                another version is in progress.
            RolloutSpecError: the service cannot be rolled out.
            BackendError: the backend failed (unavailable, ...); retry later.
        """
        try:
            obj = self.backend.get(self.name, self.namespace)
        except NotFound:
            return self._create_initial(now)
        self._check_lease(obj, now)
        state = RolloutState.from_obj(obj)
        if state is not None:
            self.last_state = state
        try:
            if state is None or (state.phase.terminal and not state.hooks_pending and state.rollout_id != self._rollout_id):
                return self._start(obj, now)
            if state.rollout_id != self._rollout_id and state.target_version != self.target_version and state.phase.terminal:
                # another version's finished rollout still owes its registry update: finish that for it,
                # then start this version's rollout; its verdict is never reported as ours
                return self._finish_others_hooks(obj, state, now)
            if state.rollout_id != self._rollout_id:
                self._adopt(state)
            if state.hooks_pending:
                return self._run_hooks(obj, state, now)
            if state.phase.terminal:
                return self._finished(state)
            if state.phase is RolloutPhase.PROGRESSING:
                return self._progress(obj, state, now)
            if state.phase is RolloutPhase.BAKING:
                return self._bake(obj, state, now)
            return self._finish_rollback(obj, state, now)
        except Conflict as exc:
            return StepOutcome(
                phase=state.phase.value if state else "Pending",
                action="conflict",
                weight=state.weight if state else 0,
                message=f"the InferenceService changed while writing ({exc}); re-reading",
                next_check_s=0.2,
            )

    # ------------------------------------------------------------------ lease

    def _check_lease(self, obj: dict, now: float) -> None:
        lease = Lease.from_obj(obj)
        if lease and lease.holder != self.holder and not lease.expired(now):
            state = RolloutState.from_obj(obj)
            what = f" (rollout of v{state.target_version}, {state.phase.value})" if state else ""
            raise RolloutRefused(
                f"{self.namespace}/{self.name}: controller {lease.holder!r} holds the rollout lease{what} "
                f"for {lease.expires - now:.0f}s more; wait for it to finish, or stop it and retry after the lease expires"
            )

    def _lease(self, now: float) -> str:
        return Lease(self.holder, now + self.strategy.lease_ttl_s).to_json()

    def release_lease(self, now: float) -> bool:
        """Give the lease up (the rollout state stays, so a rerun by anyone resumes at once); True if released.

        Called when this controller stops before the rollout ends (``--timeout``, Ctrl-C). Never raises:
        a lease that cannot be released simply expires after ``lease_ttl_s``.
        """
        try:
            obj = self.backend.get(self.name, self.namespace)
            lease = Lease.from_obj(obj) if obj else None
            if lease is None or lease.holder != self.holder or lease.expired(now):
                return False
            rv = (obj.get("metadata") or {}).get("resourceVersion", "")
            self.backend.patch_annotations(self.name, self.namespace, {LEASE_ANNOTATION: None}, rv)
            return True
        except Exception as exc:  # noqa: BLE001 - best effort on the way out
            log.warning("%s/%s: lease not released (%s); it expires in at most %.0fs",
                        self.namespace, self.name, exc, self.strategy.lease_ttl_s)
            return False

    def _renew_if_needed(self, obj: dict, now: float) -> None:
        lease = Lease.from_obj(obj)
        if lease is None or lease.holder != self.holder or lease.expires - now < self.strategy.lease_ttl_s / 2:
            rv = (obj.get("metadata") or {}).get("resourceVersion", "")
            self.backend.patch_annotations(self.name, self.namespace, {LEASE_ANNOTATION: self._lease(now)}, rv)

    # ------------------------------------------------------------------ state

    def _adopt(self, state: RolloutState) -> None:
        if state.target_version != self.target_version:
            raise RolloutRefused(
                f"{self.namespace}/{self.name}: a rollout of v{state.target_version} is {state.phase.value}; "
                f"resume it (same --model-version) before rolling out v{self.target_version}"
            )
        log.info("%s: resuming rollout %s of v%s (%s)", self.name, state.rollout_id, state.target_version, state.phase.value)
        self._rollout_id = state.rollout_id

    def _write(self, obj: dict, state: RolloutState, now: float, *, release: bool = False) -> dict:
        """Replace the object with ``state`` (and the lease) in one guarded write."""
        annotations: dict[str, str | None] = {
            STATE_ANNOTATION: state.to_json(),
            LEASE_ANNOTATION: None if release else self._lease(now),
        }
        body = with_annotations(obj, annotations)
        body.pop("status", None)
        validate_isvc(body)
        written = self.backend.apply(body)
        self.last_state = state
        return written

    def _event(self, obj: dict, reason: str, message: str, warning: bool = False) -> None:
        """A Kubernetes Event on the service, where the backend can record one (best effort)."""
        try:
            self.backend.record_event(obj, reason, message, "Warning" if warning else "Normal")
        except Exception as exc:  # events are informational: never block the rollout
            log.debug("event %s not recorded: %s", reason, exc)

    @staticmethod
    def _router(state_or_mode: "RolloutState | DeploymentMode | str") -> TrafficRouter:
        """The traffic router of the rollout's mode (the controller never asks which one it is)."""
        mode = state_or_mode.mode if isinstance(state_or_mode, RolloutState) else state_or_mode
        return make_router(mode)

    def _mode(self, obj: dict) -> DeploymentMode:
        raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(DEPLOYMENT_MODE_ANNOTATION)
        return DeploymentMode.parse(raw) if raw else DeploymentMode.SERVERLESS

    # ------------------------------------------------------------------- start

    def _create_initial(self, now: float) -> StepOutcome:
        """No service yet: deploy the version directly (nothing to compare against)."""
        obj = render_isvc(self.service)
        state = RolloutState(
            rollout_id=uuid.uuid4().hex[:12],
            target_version=self.target_version,
            previous_version="",
            mode=DeploymentMode.parse(self.service.deployment_mode).value,
            phase=RolloutPhase.PROMOTED,
            step_index=len(self.strategy.steps) - 1,
            steps=self.strategy.steps,
            started=now,
            step_started=now,
            new_predictor=obj["spec"]["predictor"],
            new_spec_hash=spec_hash(obj["spec"]["predictor"]),
            promoted_at=now,
            finished=now,
            reason="first deployment of the service (no stable version to compare against)",
            hooks_pending=("promote",),
        )
        self._rollout_id = state.rollout_id
        try:
            self._write(obj, state, now)
        except Conflict as exc:  # someone created it meanwhile; next tick reads it
            return StepOutcome(RolloutPhase.PROGRESSING.value, "conflict", 0, str(exc), next_check_s=0.2)
        log.info("%s: created with v%s (first deployment)", self.name, self.target_version)
        return StepOutcome(state.phase.value, "created", 100, state.reason, next_check_s=0.0)

    def _start(self, obj: dict, now: float) -> StepOutcome:
        mode = self._mode(obj)
        spec = obj.get("spec") or {}
        current = strip_canary(spec.get("predictor") or {})
        try:
            new_pred = render_predictor(self.service.predictor)
        except IsvcError as exc:
            raise RolloutSpecError(str(exc)) from exc
        prior = RolloutState.from_obj(obj)
        if prior is not None and prior.failed:
            return self._replace_failed(obj, prior, new_pred, mode, now)
        if spec.get("canary"):
            raise RolloutSpecError(
                f"{self.namespace}/{self.name}: spec.canary already has an entry not written by a known rollout; "
                "remove it (kubectl edit isvc) before starting a rollout"
            )
        if "canaryTrafficPercent" in (spec.get("predictor") or {}) and (spec["predictor"]["canaryTrafficPercent"] not in (0, 100)):
            raise RolloutSpecError(
                f"{self.namespace}/{self.name}: spec.predictor.canaryTrafficPercent is set to "
                f"{spec['predictor']['canaryTrafficPercent']} outside a recorded rollout; finish or undo that canary first"
            )
        if current.get("model") and openai_base_of(current) != openai_base_of(new_pred):
            raise RolloutSpecError(
                f"{self.namespace}/{self.name}: the new runtime answers OpenAI requests at {openai_base_of(new_pred)}, "
                f"the serving one at {openai_base_of(current)}; a canary would send part of every client's traffic "
                "to a path that arm does not serve (404). Roll the new runtime out as a new InferenceService "
                "(--name) and move clients over"
            )
        router = self._router(mode)
        prev_version = predictor_version(current)
        if prev_version == self.target_version and spec_hash(router.comparable(current)) == spec_hash(router.comparable(new_pred)):
            state = RolloutState(
                rollout_id=uuid.uuid4().hex[:12], target_version=self.target_version, previous_version=prev_version,
                mode=mode.value, phase=RolloutPhase.PROMOTED, steps=self.strategy.steps,
                step_index=len(self.strategy.steps) - 1, started=now, step_started=now,
                new_predictor=new_pred, prev_predictor=current, new_spec_hash=spec_hash(new_pred),
                prev_spec_hash=spec_hash(current), finished=now, promoted_at=now,
                reason=f"v{self.target_version} already serves all traffic", hooks_pending=("promote",),
            )
            self._rollout_id = state.rollout_id
            self._write(obj, state, now)
            return StepOutcome(state.phase.value, "already_serving", 100, state.reason, next_check_s=0.0)
        ps = PredictorStatus.from_isvc(obj)
        weight = self.strategy.steps[0]
        body = copy.deepcopy(obj)
        new_pred = router.start(body, current, new_pred, weight)
        state = RolloutState(
            rollout_id=uuid.uuid4().hex[:12],
            target_version=self.target_version,
            previous_version=prev_version,
            mode=mode.value,
            phase=RolloutPhase.PROGRESSING,
            step_index=0,
            steps=self.strategy.steps,
            started=now,
            step_started=now,
            new_predictor=new_pred,
            prev_predictor=current,
            new_spec_hash=spec_hash(new_pred),
            prev_spec_hash=spec_hash(current),
            stable_revision=ps.latest_rolledout or ps.latest_ready,
        )
        self._rollout_id = state.rollout_id
        written = self._write(body, state, now)
        kill_point("rollout.applied")
        self._event(written, "RolloutStarted", f"canary v{self.target_version} at {weight}% (stable v{prev_version or '?'})")
        log.info(
            "%s: rollout %s started: v%s -> v%s, %d%% to the canary",
            self.name, state.rollout_id, prev_version or "?", self.target_version, weight,
        )
        return StepOutcome(state.phase.value, "started", weight, f"canary v{self.target_version} at {weight}%", next_check_s=0.5)

    def _replace_failed(self, obj: dict, prior: RolloutState, new_pred: dict, mode: DeploymentMode, now: float) -> StepOutcome:
        """The service never served (its first deployment failed): deploy this version directly, as a first one."""
        body = copy.deepcopy(obj)
        body["spec"]["predictor"] = new_pred
        body["spec"].pop("canary", None)
        state = RolloutState(
            rollout_id=uuid.uuid4().hex[:12], target_version=self.target_version, previous_version="",
            mode=mode.value, phase=RolloutPhase.PROMOTED, step_index=len(self.strategy.steps) - 1,
            steps=self.strategy.steps, started=now, step_started=now, new_predictor=new_pred,
            new_spec_hash=spec_hash(new_pred), promoted_at=now, finished=now,
            reason=f"first deployment (v{prior.target_version} never became ready: nothing to compare against)",
            hooks_pending=("promote",),
        )
        self._rollout_id = state.rollout_id
        self._write(body, state, now)
        log.info("%s: v%s replaces v%s, whose first deployment failed", self.name, self.target_version, prior.target_version)
        return StepOutcome(state.phase.value, "created", 100, state.reason, next_check_s=0.0)

    # --------------------------------------------------------------- progress

    def _canary_status(self, obj: dict, state: RolloutState) -> tuple[bool, str | None, str | None, str | None]:
        """(ready, not-ready reason, canary revision, stable revision) for the current step."""
        st = self._router(state).canary_status(obj, state)
        return st.ready, st.reason, st.canary_revision, st.stable_revision

    def _progress(self, obj: dict, state: RolloutState, now: float) -> StepOutcome:
        weight = state.weight
        ready, reason, canary_rev, stable_rev = self._canary_status(obj, state)
        if not ready:
            failure = PredictorStatus.from_isvc(obj).failure if canary_rev else None
            if failure:  # a failed revision does not recover by waiting: roll back now, with the cause
                return self._rollback(obj, state, now, f"canary revision {canary_rev} failed at {weight}%: {failure}")
            waited = now - state.step_started
            if waited > self.strategy.ready_timeout_s:
                why = f"canary not ready after {waited:.0f}s at {weight}%: {reason}"
                return self._rollback(obj, state, now, why)
            return StepOutcome(state.phase.value, "waiting", weight, reason or "waiting for the canary", next_check_s=min(1.0, self.strategy.interval_s))
        if self.strategy.warmup_s > 0 and state.warm_until is None:
            new = state.evolve(warm_until=now + self.strategy.warmup_s, canary_revision=canary_rev or state.canary_revision)
            self._write(obj, new, now)
            return StepOutcome(new.phase.value, "waiting", weight, f"canary ready; warming up for {self.strategy.warmup_s:.0f}s",
                               next_check_s=self.strategy.warmup_s)
        if state.warm_until is not None and now < state.warm_until:
            return StepOutcome(state.phase.value, "waiting", weight, "canary warming up", next_check_s=state.warm_until - now)
        if state.interval_start is None or self._primed != (state.rollout_id, state.step_index):
            # the interval starts now; counter-based providers (scrape) take their baseline here
            self._prime(state.target_version, canary_rev, now)
            self._prime(state.previous_version, stable_rev, now)
            self._primed = (state.rollout_id, state.step_index)
            new = state.evolve(interval_start=now, canary_revision=canary_rev or state.canary_revision)
            self._write(obj, new, now)
            kill_point("rollout.interval_started")
            return StepOutcome(
                new.phase.value, "waiting", weight, f"canary ready at {weight}%; analysis interval started",
                next_check_s=self.strategy.interval_s,
            )
        due = state.interval_start + self.strategy.interval_s
        if now < due:
            self._renew_if_needed(obj, now)
            return StepOutcome(state.phase.value, "waiting", weight, f"interval ends in {due - now:.1f}s", next_check_s=due - now)

        result, record, baseline = self._analyse(state, canary_rev or state.canary_revision, stable_rev, state.interval_start, now, weight)
        from serving.rollout.analysis import Phase

        state = state.evolve(
            intervals=keep_last_evidence(state.intervals) + (record,),
            baseline=baseline or state.baseline,
            canary_revision=canary_rev or state.canary_revision,
        )
        verdict = result.phase
        reasons = "; ".join(result.reasons) if result.reasons else verdict.value
        if verdict is not Phase.FAILED and not record["decided"]:
            # the judge is still collecting evidence for this step: stay, without counting it as inconclusive
            state = state.evolve(interval_start=now)
            self._write(obj, state, now)
            self._send_probes(record.get("probe_requests", 0), weight)
            return StepOutcome(state.phase.value, "analysed", weight, f"collecting evidence at {weight}%: {reasons}",
                               next_check_s=self.strategy.interval_s, analysis=result.to_dict())
        if verdict in (Phase.FAILED, Phase.ERROR):
            failures = state.failures + 1
            state = state.evolve(failures=failures, inconclusive=0, interval_start=now)
            if failures >= self.strategy.failure_limit:
                return self._rollback(obj, state, now, f"{verdict.value} at {weight}%: {reasons}", analysis=result.to_dict())
            self._write(obj, state, now)
            return StepOutcome(state.phase.value, "analysed", weight, f"{verdict.value} ({failures}/{self.strategy.failure_limit}): {reasons}",
                               next_check_s=self.strategy.interval_s, analysis=result.to_dict())
        if verdict is Phase.INCONCLUSIVE:
            policy = self.strategy.inconclusive_policy
            if policy is InconclusivePolicy.ROLLBACK:
                return self._rollback(obj, state, now, f"inconclusive at {weight}%: {reasons}", analysis=result.to_dict())
            if policy is InconclusivePolicy.PAUSE:
                # as Argo Rollouts: inconclusive pauses; the judge keeps measuring and decides when traffic allows
                state = state.evolve(inconclusive=state.inconclusive + 1, interval_start=now)
                self._write(obj, state, now)
                self._send_probes(record.get("probe_requests", 0), weight)
                return StepOutcome(state.phase.value, "paused", weight,
                                   f"inconclusive, paused at {weight}% (never rolled back for low traffic; "
                                   f"send traffic or stop the rollout): {reasons}",
                                   next_check_s=self.strategy.interval_s, analysis=result.to_dict())
            if policy is InconclusivePolicy.HOLD:
                held = state.inconclusive + 1
                if held >= self.strategy.max_inconclusive:
                    return self._rollback(
                        obj, state, now,
                        f"inconclusive for {held} intervals at {weight}% (hold limit {self.strategy.max_inconclusive}): {reasons}",
                        analysis=result.to_dict(),
                    )
                state = state.evolve(inconclusive=held, interval_start=now)
                self._write(obj, state, now)
                return StepOutcome(state.phase.value, "analysed", weight, f"inconclusive, holding at {weight}% ({held}/{self.strategy.max_inconclusive}): {reasons}",
                                   next_check_s=self.strategy.interval_s, analysis=result.to_dict())
            # PROMOTE: counts as a success
        successes = max(state.successes + 1, self.strategy.intervals_per_step)  # the judge counted min_intervals
        state = state.evolve(successes=successes, inconclusive=0, interval_start=now)
        if successes < self.strategy.intervals_per_step:
            self._write(obj, state, now)
            return StepOutcome(state.phase.value, "analysed", weight, f"interval passed at {weight}% ({successes}/{self.strategy.intervals_per_step})",
                               next_check_s=self.strategy.interval_s, analysis=result.to_dict())
        if state.step_index + 1 >= len(state.steps):
            return self._promote(obj, state, now, analysis=result.to_dict())
        return self._advance(obj, state, now, analysis=result.to_dict())

    def _advance(self, obj: dict, state: RolloutState, now: float, analysis: dict | None) -> StepOutcome:
        index = state.step_index + 1
        weight = state.steps[index]
        state = state.evolve(step_index=index, step_started=now, interval_start=None, successes=0)
        body = copy.deepcopy(obj)
        self._router(state).set_weight(body, state, weight)
        written = self._write(body, state, now)
        kill_point("rollout.traffic_changed")
        self._event(written, "CanaryAdvanced", f"v{state.target_version} passed its analysis; canary now at {weight}%")
        log.info("%s: v%s passed step %d, canary now at %d%%", self.name, state.target_version, index, weight)
        return StepOutcome(state.phase.value, "advanced", weight, f"canary at {weight}%", next_check_s=0.5, analysis=analysis)

    def _promote(self, obj: dict, state: RolloutState, now: float, analysis: dict | None) -> StepOutcome:
        body = copy.deepcopy(obj)
        self._router(state).promote(body, state)
        bake = self.strategy.bake_s
        state = state.evolve(
            phase=RolloutPhase.BAKING if bake > 0 else RolloutPhase.PROMOTED,
            promoted_at=now,
            bake_until=now + bake if bake > 0 else None,
            interval_start=now if bake > 0 else None,
            finished=None if bake > 0 else now,
            reason=f"all {len(state.steps)} steps passed",
            hooks_pending=("promote",),
            failures=0,
        )
        written = self._write(body, state, now)
        kill_point("rollout.promotion_written")
        self._event(written, "CanaryPromoted", f"v{state.target_version} promoted: {state.reason}")
        log.info("%s: v%s promoted (%s)", self.name, state.target_version, state.reason)
        return StepOutcome(state.phase.value, "promoted", 100, state.reason, next_check_s=0.0, analysis=analysis)

    def _rollback(self, obj: dict, state: RolloutState, now: float, reason: str, analysis: dict | None = None) -> StepOutcome:
        """Take traffic off the new version in one write."""
        body = copy.deepcopy(obj)
        was_promoted = state.phase is RolloutPhase.BAKING
        plan = self._router(state).rollback(body, state, was_promoted)
        if plan.finished:
            new = state.evolve(
                phase=RolloutPhase.ROLLED_BACK, reason=reason, finished=now, interval_start=None, bake_until=None,
                hooks_pending=("rollback", "restore_alias") if was_promoted else ("rollback",),
            )
        else:
            new = state.evolve(phase=RolloutPhase.ROLLING_BACK, reason=reason, step_started=now, interval_start=None,
                               hooks_pending=(), bake_until=None)
        new = new.evolve(baseline=state.baseline, promoted_at=state.promoted_at if was_promoted else None)
        written = self._write(body, new, now)
        kill_point("rollout.rollback_written")
        self._event(written, "CanaryRollback", f"v{state.target_version} rolled back: {reason}", warning=True)
        log.warning("%s: rolling back v%s: %s", self.name, state.target_version, reason)
        return StepOutcome(new.phase.value, "rolling_back", 0, reason, next_check_s=0.0, analysis=analysis)

    def _finish_rollback(self, obj: dict, state: RolloutState, now: float) -> StepOutcome:
        """RollingBack: the router restores the previous spec step by step once traffic left the new version."""
        body, finished, message = self._router(state).finish_rollback(obj, state)
        if body is not None and not finished:
            new = state.evolve(step_started=now)
            self._write(body, new, now)
            return StepOutcome(new.phase.value, "rolling_back", 0, message, next_check_s=0.5)
        reason = state.reason
        if body is None:
            if now - state.step_started <= self.strategy.ready_timeout_s:
                return StepOutcome(state.phase.value, "waiting", 0, message, next_check_s=0.5)
            body = copy.deepcopy(obj)
            reason += f" (restored revision not ready after {self.strategy.ready_timeout_s:.0f}s; canaryTrafficPercent kept at 0)"
        was_promoted = state.promoted_at is not None
        new = state.evolve(
            phase=RolloutPhase.ROLLED_BACK, finished=now, reason=reason,
            hooks_pending=("rollback", "restore_alias") if was_promoted else ("rollback",),
        )
        self._write(body, new, now)
        return StepOutcome(new.phase.value, "rolled_back", 0, reason, next_check_s=0.0)

    # ------------------------------------------------------------------- bake

    def _bake(self, obj: dict, state: RolloutState, now: float) -> StepOutcome:
        if state.hooks_pending:
            return self._run_hooks(obj, state, now)
        if self._primed != (state.rollout_id, "bake"):
            ps = PredictorStatus.from_isvc(obj)
            self._prime(state.target_version, state.canary_revision or ps.latest_ready, now)
            self._primed = (state.rollout_id, "bake")
            state = state.evolve(interval_start=now)
            self._write(obj, state, now)
            return StepOutcome(state.phase.value, "waiting", 100, "baking: analysis interval started", next_check_s=self.strategy.interval_s)
        start = state.interval_start or state.promoted_at or now
        due = start + self.strategy.interval_s
        if now < due:
            self._renew_if_needed(obj, now)
            return StepOutcome(state.phase.value, "waiting", 100, f"baking; next check in {due - now:.1f}s", next_check_s=due - now)
        ps = PredictorStatus.from_isvc(obj)
        canary_rev = state.canary_revision or ps.latest_ready
        result, record, _ = self._analyse(state, canary_rev, None, start, now, 100, bake=True)
        from serving.rollout.analysis import Phase

        state = state.evolve(intervals=keep_last_evidence(state.intervals) + (record,), interval_start=now)
        reasons = "; ".join(result.reasons) if result.reasons else result.phase.value
        if result.phase in (Phase.FAILED, Phase.ERROR):
            failures = state.failures + 1
            state = state.evolve(failures=failures)
            if failures >= self.strategy.failure_limit:
                return self._rollback(obj, state, now, f"{result.phase.value} during the bake window: {reasons}", analysis=result.to_dict())
        if state.bake_until is not None and now >= state.bake_until:
            state = state.evolve(phase=RolloutPhase.PROMOTED, finished=now, interval_start=None)
            self._write(obj, state, now, release=True)
            return StepOutcome(state.phase.value, "done", 100, f"bake window passed; {state.reason}", done=True, result="promoted",
                               next_check_s=0.0, analysis=result.to_dict())
        self._write(obj, state, now)
        return StepOutcome(state.phase.value, "analysed", 100, f"baking: {reasons}", next_check_s=self.strategy.interval_s, analysis=result.to_dict())

    # ------------------------------------------------------------------ done

    def _finished(self, state: RolloutState) -> StepOutcome:
        result = "promoted" if state.phase is RolloutPhase.PROMOTED else "rolled_back"
        return StepOutcome(state.phase.value, "done", state.weight, state.reason, done=True, result=result, next_check_s=0.0)
