"""The traffic-router interface (Flagger's ``pkg/router``, Argo Rollouts' ``trafficrouting``).

A router knows one way of splitting traffic between the stable and the canary
version of an InferenceService and edits the object's ``spec`` accordingly; the
rollout controller decides *when*, the router decides *how*. Every method edits
a copy of the object (``body``) that the controller then writes in one guarded
replace, or reads ``status``; none talks to the API itself.
"""

from __future__ import annotations

import abc
import copy
from dataclasses import dataclass
from typing import Any
from serving.cluster.names import MODEL_VERSION_ENV



@dataclass(frozen=True)
class CanaryStatus:
    """What ``status`` says about the current step."""

    ready: bool  # the canary serves the step's share
    reason: str | None  # why not, when not ready
    canary_revision: str | None  # the canary's revision (Serverless) or Deployment (Standard)
    stable_revision: str | None  # the revision (or Deployment) serving the rest


@dataclass(frozen=True)
class RollbackPlan:
    """How a rollback proceeds after its first write."""

    finished: bool  # True: the first write restored the previous version (no restore phase)


def strip_canary(predictor: dict[str, Any]) -> dict[str, Any]:
    """``spec.predictor`` without ``canaryTrafficPercent``."""
    out = copy.deepcopy(predictor)
    out.pop("canaryTrafficPercent", None)
    return out


def predictor_version(predictor: dict[str, Any]) -> str:
    """The ``LLMOPS_MODEL_VERSION`` a predictor spec carries ("" when absent)."""
    for section in [predictor.get("model") or {}] + list(predictor.get("containers") or []):
        for env in section.get("env") or ():
            if env.get("name") == MODEL_VERSION_ENV:
                return str(env.get("value") or "")
    return ""


def observed(obj: dict[str, Any]) -> bool:
    """Whether the serving control plane has seen the latest spec (``observedGeneration``)."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    return not ("generation" in meta and "observedGeneration" in status and status["observedGeneration"] < meta["generation"])


def condition_reason(status: dict) -> str | None:
    for cond in status.get("conditions") or ():
        if cond.get("status") == "False":
            return cond.get("message") or cond.get("reason")
    return None


class TrafficRouter(abc.ABC):
    """One traffic mode. ``state`` arguments are :class:`serving.rollout.state.RolloutState`."""

    name: str

    def comparable(self, predictor: dict[str, Any]) -> dict[str, Any]:
        """The predictor as the controller compares versions (fields the router adds removed)."""
        return strip_canary(predictor)

    @abc.abstractmethod
    def start(self, body: dict[str, Any], current: dict[str, Any], new_predictor: dict[str, Any], weight: int) -> dict[str, Any]:
        """Send ``weight`` percent to ``new_predictor``; return the canary predictor to record in the state."""

    @abc.abstractmethod
    def set_weight(self, body: dict[str, Any], state: Any, weight: int) -> None:
        """Move the canary to ``weight`` percent."""

    @abc.abstractmethod
    def canary_status(self, obj: dict[str, Any], state: Any) -> CanaryStatus:
        """Read back whether the current step's split is in place."""

    @abc.abstractmethod
    def promote(self, body: dict[str, Any], state: Any) -> None:
        """Give the new version all traffic, as its own stable spec."""

    @abc.abstractmethod
    def rollback(self, body: dict[str, Any], state: Any, promoted: bool) -> RollbackPlan:
        """Take all traffic off the new version in this one write (``promoted``: during the bake window)."""

    def finish_rollback(self, obj: dict[str, Any], state: Any) -> tuple[dict[str, Any] | None, bool, str]:
        """One restore step after :meth:`rollback`: ``(body to write or None, finished, message)``."""
        return None, True, "rolled back"
