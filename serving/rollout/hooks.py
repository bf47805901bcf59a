"""Registry hooks: what the rollout tells the model registry when it decides.

The alias ``champion`` always names the version that serves: the controller
calls :meth:`RegistryHooks.promoted` once the new version takes all traffic and
:meth:`RegistryHooks.rolled_back` once the previous version serves again (with
``alias_moved=True`` when a bake-window regression undoes a promotion, so the
alias goes back too). Hooks must be idempotent: a restarted controller calls a
hook again when it cannot tell whether the last call landed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)

REPORT_TAG = "llmops.rollout_report"  # model-version tag: runs:/ URI of the rollout report artifact


@dataclass(frozen=True)
class RolloutEvent:
    """One decision, as the registry sees it."""

    service: str  # InferenceService name
    namespace: str
    version: str  # the version that was rolled out
    previous_version: str  # the version that served before
    reason: str  # why (verdict reasons, or "all steps passed")
    report: dict[str, Any] = field(default_factory=dict)  # the JSON report
    report_url: str | None = None  # where the human report lives
    alias_moved: bool = False  # rollback after promotion: the alias must go back
    rollout_id: str | None = None  # the rollout deciding: the registry writes each of its events once


@runtime_checkable
class RegistryHooks(Protocol):
    """Receives promotion and rollback decisions."""

    def promoted(self, event: RolloutEvent) -> None:
        """The new version serves all traffic."""

    def rolled_back(self, event: RolloutEvent) -> None:
        """The previous version serves again."""


class NoopHooks:
    """Tells nobody (no registry configured)."""

    def promoted(self, event: RolloutEvent) -> None:
        log.info("no registry hooks: %s v%s promoted", event.service, event.version)

    def rolled_back(self, event: RolloutEvent) -> None:
        log.info("no registry hooks: %s v%s rolled back", event.service, event.version)


class MlflowHooks:
    """Moves MLflow's ``champion`` alias and records rollbacks on the version.

    Args:
        model_name: registered model name in MLflow.
        tracking_uri: MLflow tracking URI (None: the project's default).
    """

    def __init__(self, model_name: str, tracking_uri: str | None = None) -> None:
        self.model_name = model_name
        self.tracking_uri = tracking_uri

    def attach_report(self, event: RolloutEvent) -> str | None:
        """Log the rollout report (JSON + Markdown, every verdict's evidence) as artifacts of the version's run.

        Returns the ``runs:/`` URI of the Markdown (also set as the version's
        ``llmops.rollout_report`` tag), or ``None`` when the version has no run.
        Rewriting the same files makes a retried hook idempotent.
        """
        import json

        from model_registry.client import connect
        from serving.rollout.report import render_markdown

        if not event.report:
            return None
        conn = connect(self.tracking_uri)
        with conn.guard():
            mv = conn.client.get_model_version(self.model_name, str(event.version))
            if not mv.run_id:
                return None
            folder = f"rollouts/{event.report.get('rollout_id') or 'rollout'}"
            conn.client.log_text(mv.run_id, json.dumps(event.report, indent=2, sort_keys=True, default=str), f"{folder}/rollout.json")
            conn.client.log_text(mv.run_id, render_markdown(event.report), f"{folder}/rollout.md")
            uri = f"runs:/{mv.run_id}/{folder}/rollout.md"
            conn.client.set_model_version_tag(self.model_name, str(event.version), REPORT_TAG, uri)
        log.info("registry: rollout report of %s v%s attached at %s", self.model_name, event.version, uri)
        return uri

    def _report_url(self, event: RolloutEvent) -> str | None:
        try:
            return self.attach_report(event) or event.report_url
        except Exception as exc:  # the alias must move even when the artifact store is unreachable
            log.warning("registry: rollout report not attached to %s v%s: %s", self.model_name, event.version, exc)
            return event.report_url

    def promoted(self, event: RolloutEvent) -> None:
        from model_registry import promotion

        # the alias names what serves: no expected_champion guard, the traffic already moved
        promotion.promote(
            self.model_name,
            event.version,
            trigger="canary",
            reason=event.reason or f"canary rollout of {event.service} passed every step",
            report_url=self._report_url(event),
            tracking_uri=self.tracking_uri,
            rollout_id=event.rollout_id,
        )
        log.info("registry: %s v%s is now champion", self.model_name, event.version)

    def rolled_back(self, event: RolloutEvent) -> None:
        from model_registry import promotion

        # record_rollback also moves ``champion`` back when the rolled-back version holds it
        promotion.record_rollback(
            self.model_name,
            event.version,
            reason=event.reason or "rolled back by the canary analysis",
            report_url=self._report_url(event),
            report=event.report,
            tracking_uri=self.tracking_uri,
            rollout_id=event.rollout_id,
            # a re-roll of the serving version (new spec): that version, on its old spec, serves on
            same_version_serves=event.version == event.previous_version,
        )
        log.info("registry: %s v%s rollback recorded", self.model_name, event.version)
