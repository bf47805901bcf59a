"""Registry hooks for :class:`~serving.rollout.controller.RolloutController` (Flagger's ``scheduler_hooks.go``).

A terminal phase owes the registry an update (``hooks_pending`` on the rollout
state): the report is written, the hooks run (promoted / rolled back), and only
then is the debt cleared in the same guarded write as the state. A first
deployment is promoted once it serves; another version's finished rollout gets
its hooks run before this version's rollout starts.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

from serving.backends.base import PredictorStatus, revision_failure
from serving.rollout.hooks import RegistryHooks, RolloutEvent
from serving.rollout.outcome import StepOutcome
from serving.rollout.state import RolloutPhase, RolloutState
from serving.rollout.strategy import RolloutStrategy

log = logging.getLogger("serving.rollout.controller")  # the controller's log, as before the split


class HookRunner:
    """The registry-hook steps of :class:`~serving.rollout.controller.RolloutController` (a mixin).

    They write through the controller's ``_write`` and ``_renew_if_needed`` and end with its ``_finished``.
    """

    strategy: RolloutStrategy
    hooks: RegistryHooks
    report_writer: Callable[[dict], str | None] | None
    last_state: RolloutState | None
    name: str
    namespace: str
    target_version: str

    def _finish_others_hooks(self, obj: dict, state: RolloutState, now: float) -> StepOutcome:
        """Run the pending hooks of another version's terminal rollout; never ``done`` for this one."""
        log.info("%s: finishing the registry update of v%s's %s rollout before v%s",
                 self.name, state.target_version, state.phase.value, self.target_version)
        out = self._run_hooks(obj, state, now, report_done=False)
        return dataclasses.replace(out, done=False, result=None, next_check_s=min(out.next_check_s, 1.0),
                                   message=f"v{state.target_version}: {out.message}")

    def _first_deployment_pending(self, obj: dict, state: RolloutState, now: float) -> StepOutcome | None:
        """A first deployment is promoted once it serves: wait for Ready, fail on a failed revision."""
        if state.previous_version or "promote" not in state.hooks_pending:
            return None
        status = PredictorStatus.from_isvc(obj)
        if status.ready:
            return None
        # Only PredictorReady=False or a failed revision is a failure: KServe's Standard mode reports Ready=False
        # during every normal start (reconcilers/ingress/httproute_reconciler.go Reconcile sets IngressReady=False
        # while PredictorReady is Unknown), so Ready=False alone means "still starting".
        failed = [c for c in status.conditions if c.get("type") == "PredictorReady" and c.get("status") == "False"]
        revision_failed = revision_failure(obj.get("status") or {})
        waited = now - state.started
        if failed or revision_failed or waited > self.strategy.ready_timeout_s:
            why = revision_failed or status.reason or f"not ready after {waited:.0f}s"
            reason = f"v{state.target_version} did not become ready: {why}"
            # terminal, nothing owed to the registry: the next rollout replaces it as a first deployment
            failed_state = state.evolve(phase=RolloutPhase.ROLLED_BACK, hooks_pending=(), failed=True, reason=reason,
                                        finished=now)
            self._write(obj, failed_state, now, release=True)
            return StepOutcome(failed_state.phase.value, "failed", 0, reason, done=True, result="error", next_check_s=0.0)
        self._renew_if_needed(obj, now)
        return StepOutcome(state.phase.value, "waiting", 0, f"waiting for v{state.target_version} to become ready",
                           next_check_s=1.0)

    def _run_hooks(self, obj: dict, state: RolloutState, now: float, report_done: bool = True) -> StepOutcome:
        pending = self._first_deployment_pending(obj, state, now)
        if pending is not None:
            return pending
        report_url = None
        if self.report_writer is not None:
            try:
                report_url = self.report_writer(self.report_data(state))
            except Exception as exc:  # a report that cannot be written must not block the alias
                log.warning("%s: report not written: %s", self.name, exc)
        event = RolloutEvent(
            service=self.name,
            namespace=self.namespace,
            version=state.target_version,
            previous_version=state.previous_version,
            reason=state.reason,
            report=self.report_data(state),
            report_url=report_url,
            alias_moved="restore_alias" in state.hooks_pending,
            rollout_id=state.rollout_id,
        )
        try:
            if "promote" in state.hooks_pending:
                self.hooks.promoted(event)
            if "rollback" in state.hooks_pending:
                self.hooks.rolled_back(event)
        except Exception as exc:
            self._renew_if_needed(obj, now)
            return StepOutcome(state.phase.value, "hooks", state.weight, f"registry hook failed, retrying: {exc}", next_check_s=2.0)
        new = state.evolve(hooks_pending=())
        terminal = new.phase.terminal
        self._write(obj, new, now, release=terminal)
        if terminal and report_done:
            return self._finished(new)
        if terminal:
            return StepOutcome(new.phase.value, "hooks", new.weight, "registry updated", next_check_s=0.0)
        return StepOutcome(new.phase.value, "hooks", new.weight, "registry updated; baking", next_check_s=0.0)

    def report_data(self, state: RolloutState | None = None) -> dict[str, Any]:
        """The JSON report of the rollout as recorded so far."""
        from serving.rollout.report import build_report

        state = state or self.last_state
        return build_report(self.name, self.namespace, state, self.strategy)
