"""Serving backends: where InferenceServices live and report their status.

The rollout controller talks to one :class:`ServingBackend` and cannot tell the
implementations apart: ``kserve`` (the Kubernetes API through the official
client) and ``local`` (a one-machine control plane running real KServe
model-server processes behind a weighted router). Both take and return
InferenceService objects as plain dicts (``serving.kserve.io/v1beta1``) and fill
``status.components.predictor`` the way KServe does.

Errors::

    BackendError
    ├── BackendUnavailable   API server / local control plane unreachable (says the fix)
    ├── NotFound             no such InferenceService
    └── Conflict             stale resourceVersion (optimistic concurrency lost)
"""

from __future__ import annotations

from llmops_core.errors import LlmopsError

import abc
from dataclasses import dataclass, field
from typing import Any


class BackendError(LlmopsError):
    """Base class for serving backend errors."""


class BackendUnavailable(BackendError):
    """The backend cannot be reached; the message says how to fix it."""


class NotFound(BackendError):
    """The InferenceService does not exist."""


class Conflict(BackendError):
    """The object changed since it was read (resourceVersion mismatch)."""


@dataclass(frozen=True)
class TrafficTarget:
    """One entry of ``status.components.predictor.traffic``."""

    revision: str  # revisionName
    percent: int  # share of traffic
    latest: bool = False  # latestRevision flag
    tag: str | None = None  # "latest" / "prev" with tag routing
    url: str | None = None  # tag-routed address, when present


@dataclass(frozen=True)
class PredictorStatus:
    """The parts of ``status.components.predictor`` a rollout reads."""

    latest_created: str | None = None
    latest_ready: str | None = None
    latest_rolledout: str | None = None
    previous_rolledout: str | None = None
    traffic: tuple[TrafficTarget, ...] = ()
    url: str | None = None
    ready: bool = False  # condition Ready (or PredictorReady) is True
    reason: str | None = None  # reason/message of a False ready condition
    conditions: tuple[dict, ...] = field(default_factory=tuple)
    failure: str | None = None  # a revision has failed for good (not just "not ready yet"): why

    @classmethod
    def from_isvc(cls, obj: dict[str, Any]) -> "PredictorStatus":
        status = obj.get("status") or {}
        pred = (status.get("components") or {}).get("predictor") or {}
        conditions = tuple(status.get("conditions") or ())
        ready, reason = False, None
        for cond in conditions:
            if cond.get("type") in ("Ready", "PredictorReady"):
                if cond.get("status") == "True":
                    ready = True if cond.get("type") == "Ready" or not ready else ready
                else:
                    ready = False
                    reason = cond.get("message") or cond.get("reason") or reason
        traffic = tuple(
            TrafficTarget(
                revision=t.get("revisionName", ""),
                percent=int(t.get("percent", 0) or 0),
                latest=bool(t.get("latestRevision", False)),
                tag=t.get("tag"),
                url=t.get("url"),
            )
            for t in pred.get("traffic") or ()
        )
        return cls(
            failure=revision_failure(status),
            latest_created=pred.get("latestCreatedRevision"),
            latest_ready=pred.get("latestReadyRevision"),
            latest_rolledout=pred.get("latestRolledoutRevision"),
            previous_rolledout=pred.get("previousRolledoutRevision"),
            traffic=traffic,
            url=pred.get("url"),
            ready=ready,
            reason=reason,
            conditions=conditions,
        )


# Signals that a revision failed and will not become ready by waiting: Knative's
# ConfigurationsReady=False/RevisionFailed (propagated by KServe to PredictorReady), a revision's
# ContainerHealthy=False, and KServe's modelStatus.transitionStatus BlockedByFailedLoad.
FAILED_REASONS = frozenset({"RevisionFailed"})
FAILED_CONDITION_TYPES = frozenset({"ContainerHealthy"})


def revision_failure(status: dict[str, Any]) -> str | None:
    """Why the latest revision failed, from an InferenceService ``status``; None while it may still start."""
    for cond in status.get("conditions") or ():
        if cond.get("status") == "False" and (cond.get("reason") in FAILED_REASONS or cond.get("type") in FAILED_CONDITION_TYPES):
            return cond.get("message") or f"{cond.get('type')}: {cond.get('reason')}"
    model = status.get("modelStatus") or {}
    if model.get("transitionStatus") == "BlockedByFailedLoad":
        info = model.get("lastFailureInfo") or {}
        return info.get("message") or info.get("reason") or "the model failed to load"
    return None


@dataclass(frozen=True)
class Endpoints:
    """Addresses a rollout uses to reach the service and each revision."""

    url: str  # the service address (traffic split applies)
    latest_url: str | None = None  # tag-routed address of the newest revision
    prev_url: str | None = None  # tag-routed address of the previous revision


class ServingBackend(abc.ABC):
    """Stores InferenceServices and reports their status like KServe."""

    @abc.abstractmethod
    def get(self, name: str, namespace: str) -> dict[str, Any]:
        """Return the object, with ``metadata.resourceVersion`` and ``status``.

        Raises:
            NotFound: no such InferenceService.
            BackendUnavailable: the backend cannot be reached.
        """

    @abc.abstractmethod
    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create the object, or replace it when it carries ``metadata.resourceVersion``.

        Raises:
            Conflict: the stored resourceVersion differs from the one given.
        """

    @abc.abstractmethod
    def patch_annotations(
        self, name: str, namespace: str, annotations: dict[str, str | None], resource_version: str
    ) -> dict[str, Any]:
        """Set (or, with ``None``, remove) annotations, guarded by ``resource_version``.

        Raises:
            Conflict: the object changed since ``resource_version``.
        """

    @abc.abstractmethod
    def delete(self, name: str, namespace: str) -> None:
        """Delete the InferenceService (missing is not an error)."""

    @abc.abstractmethod
    def endpoints(self, name: str, namespace: str) -> Endpoints:
        """The service URL and, with tag routing, the ``latest``/``prev`` URLs."""

    def record_event(self, obj: dict[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        """Record a Kubernetes-style Event on the service (``kubectl describe`` shows it); default: none kept."""

    def revision_urls(self, name: str, namespace: str, revision: str) -> tuple[str, ...]:
        """Base URLs of one revision's model servers (for the ``scrape`` metrics provider).

        Backends that cannot reach pods directly return ``()``.
        """
        return ()
