"""Knative's traffic and revision bookkeeping for the local backend, as pure functions.

KServe's ksvc reconciler writes the traffic targets of a Serverless predictor and
``PropagateStatus`` keeps ``status.components.predictor``'s rolled-out revisions;
:func:`reconcile_traffic` runs both to their fixed point over a
:class:`RevisionBookkeeping`, and :func:`predictor_condition` derives
``PredictorReady`` from the revisions' states. :class:`serving.backends.local.LocalBackend`
calls these on every reconcile; nothing here touches a process or a file.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from serving.backends.base import TrafficTarget
from serving.isvc import TAG_ROUTING_ANNOTATION


@dataclass(frozen=True)
class RevisionBookkeeping:
    """The revision bookkeeping KServe keeps in ``status.components.predictor``."""

    latest_created: str | None = None  # newest revision (new spec or reused one)
    latest_ready: str | None = None  # newest revision that became ready
    latest_rolledout: str | None = None  # last revision that took 100% of traffic
    previous_rolledout: str | None = None  # the one rolled out before it


def predictor_template(predictor: dict[str, Any]) -> dict[str, Any]:
    """The part of ``spec.predictor`` that defines a revision (all but ``canaryTrafficPercent``)."""
    return {k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}


def same_template(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Compare two revision templates structurally (key order does not matter)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def revision_name(service: str, number: int) -> str:
    """Knative-style revision name: ``<service>-predictor-00001``."""
    return f"{service}-predictor-{number:05d}"


def route_traffic(state: RevisionBookkeeping, canary_percent: int | None, tag_routing: bool) -> tuple[TrafficTarget, ...]:
    """Traffic targets as KServe's ksvc reconciler writes them, resolved to revisions.

    ``latestRevision: true`` targets resolve to the latest *ready* revision (as
    Knative routes them); with no ready revision there is no traffic yet.

    Args:
        state: current revision bookkeeping.
        canary_percent: ``spec.predictor.canaryTrafficPercent`` or None.
        tag_routing: the tag-routing annotation is ``"true"``.
    """
    if state.latest_ready is None:
        return ()
    latest_tag = "latest" if tag_routing else None
    if canary_percent is not None and state.latest_rolledout:
        targets = [TrafficTarget(state.latest_ready, canary_percent, latest=True, tag=latest_tag)]
        if canary_percent < 100:
            targets.append(TrafficTarget(state.latest_rolledout, 100 - canary_percent, latest=False, tag="prev"))
        return tuple(targets)
    return (TrafficTarget(state.latest_ready, 100, latest=True, tag=latest_tag),)


def propagate_rollout(state: RevisionBookkeeping, traffic: Sequence[TrafficTarget]) -> RevisionBookkeeping:
    """Update the rolled-out revisions from the traffic in force (KServe's ``PropagateStatus``).

    The latest ready revision taking 100% becomes ``latest_rolledout`` (the former
    one moves to ``previous_rolledout``). When a rolled-out latest revision is
    split with itself below 100% (a canary set on an already promoted spec), the
    rollout falls back to ``previous_rolledout``.
    """
    by_revision: dict[str, int] = {}
    for t in traffic:
        by_revision[t.revision] = by_revision.get(t.revision, 0) + t.percent
    rolledout, previous = state.latest_rolledout, state.previous_rolledout
    for t in traffic:
        if not (t.latest and t.revision == state.latest_ready):
            continue
        if rolledout != state.latest_ready:
            if t.percent == 100:
                previous, rolledout = rolledout, state.latest_ready
        elif state.latest_ready == state.latest_created and t.percent < 100:
            if by_revision.get(t.revision) == 100 and previous:
                rolledout = previous
    return RevisionBookkeeping(state.latest_created, state.latest_ready, rolledout, previous)


def reconcile_traffic(
    state: RevisionBookkeeping, canary_percent: int | None, tag_routing: bool
) -> tuple[RevisionBookkeeping, tuple[TrafficTarget, ...]]:
    """Alternate :func:`route_traffic` and :func:`propagate_rollout` until nothing changes.

    KServe reaches the same fixed point over successive reconcile loops.
    """
    traffic = route_traffic(state, canary_percent, tag_routing)
    for _ in range(4):
        nxt = propagate_rollout(state, traffic)
        nxt_traffic = route_traffic(nxt, canary_percent, tag_routing)
        if nxt == state and nxt_traffic == traffic:
            break
        state, traffic = nxt, nxt_traffic
    return state, traffic


def revisions_to_keep(state: RevisionBookkeeping, traffic: Sequence[TrafficTarget]) -> frozenset[str]:
    """Revisions whose processes must stay up: serving traffic, latest, or a rollback target."""
    keep = {t.revision for t in traffic}
    keep.update(
        r
        for r in (state.latest_created, state.latest_ready, state.latest_rolledout, state.previous_rolledout)
        if r
    )
    return frozenset(keep)


@dataclass(frozen=True)
class RevisionGC:
    """Knative's revision garbage collection settings (``config-gc``), with its defaults.

    Defaults from knative/serving ``pkg/gc/config.go`` ``defaultConfig``: keep
    revisions for 48 h after creation and 15 h after they last served, keep at
    least 20 non-active revisions, at most 1000. ``None`` disables a setting
    (Knative's ``disabled``).
    """

    retain_since_create_time_s: float | None = 48 * 3600.0
    retain_since_last_active_time_s: float | None = 15 * 3600.0
    min_non_active: int = 20
    max_non_active: int | None = 1000


def revisions_to_collect(
    revisions: dict[str, dict[str, Any]], active: frozenset[str], now: float, gc: RevisionGC
) -> list[str]:
    """Revisions Knative's GC deletes, oldest-active first.

    knative/serving ``pkg/reconciler/gc/gc.go`` ``collect``: nothing while the
    configuration has ``min_non_active`` revisions or fewer; among the
    non-active ones, sorted by last active time (``revisionLastActiveTime``: when
    they stopped serving, else created), the stale ones (``isRevisionStale``: older
    than both retain times) go, but never more than leave ``min_non_active``;
    then the oldest past ``max_non_active``. Here a revision is active while the
    backend keeps it (:func:`revisions_to_keep`: routed, latest, or a rollback
    target), which protects more than Knative's latest-ready rule does.
    Each record needs ``created_at`` and, once it stopped serving, ``inactive_since``.
    """
    lo, hi = gc.min_non_active, gc.max_non_active
    keep_c, keep_a = gc.retain_since_create_time_s, gc.retain_since_last_active_time_s
    if hi is None and keep_c is None and keep_a is None:
        return []
    non_active = [n for n in revisions if n not in active]
    if len(non_active) <= lo:
        return []

    def last_active(name: str) -> float:
        rec = revisions[name]
        return float(rec.get("inactive_since") or rec.get("created_at") or 0.0)

    def stale(name: str) -> bool:
        if keep_c is None and keep_a is None:
            return False
        if keep_c is not None and now - float(revisions[name].get("created_at") or 0.0) < keep_c:
            return False
        return not (keep_a is not None and now - last_active(name) < keep_a)

    non_active.sort(key=last_active)
    out: list[str] = []
    for name in non_active:
        if stale(name):
            out.append(name)
            if len(out) >= len(non_active) - lo:
                return out
    rest = [n for n in non_active if n not in out]
    if hi is None or len(rest) <= hi:
        return out
    return out + rest[: len(rest) - hi]


def now_iso(clock: Callable[[], float]) -> str:
    """``clock()`` as a Kubernetes timestamp (UTC, whole seconds)."""
    return _dt.datetime.fromtimestamp(clock(), tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(type_: str, status: str, reason: str | None = None, message: str | None = None) -> dict[str, Any]:
    """One ``status.conditions[]`` entry (reason and message only when given)."""
    cond: dict[str, Any] = {"type": type_, "status": status}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def predictor_condition(revisions: dict[str, dict[str, Any]], state: RevisionBookkeeping) -> dict[str, Any]:
    """``PredictorReady`` from the revisions' states (Knative's ConfigurationsReady).

    True when the latest created revision is ready and every revision taking
    traffic is up; False when one of them failed (the reason carries its exit
    status and last log lines); Unknown while the latest one is starting.
    """
    latest = revisions.get(state.latest_created or "")
    if latest is None:
        return condition("PredictorReady", "Unknown", "RevisionMissing", "no revision has been created yet")
    if latest["state"] == "Failed":
        return condition(
            "PredictorReady",
            "False",
            "RevisionFailed",
            f"Revision {state.latest_created!r} failed with message: {latest.get('reason')}",
        )
    if latest["state"] != "Ready":
        return condition(
            "PredictorReady",
            "Unknown",
            "RevisionMissing",
            f"Configuration is waiting for Revision {state.latest_created!r} to become ready",
        )
    return condition("PredictorReady", "True")


def tag_routing_enabled(obj: dict[str, Any]) -> bool:
    """Whether the service asks for KServe's ``latest-``/``prev-`` tag addresses."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(TAG_ROUTING_ANNOTATION, "")).lower() == "true"


def keep_transition_times(
    old: Sequence[dict[str, Any]], new: list[dict[str, Any]], now: float
) -> list[dict[str, Any]]:
    """Carry ``lastTransitionTime`` over for conditions whose status did not change."""
    previous = {c["type"]: c for c in old}
    stamp = _dt.datetime.fromtimestamp(now, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = []
    for cond in new:
        before = previous.get(cond["type"])
        same = before is not None and before.get("status") == cond["status"]
        out.append({**cond, "lastTransitionTime": before["lastTransitionTime"] if same else stamp})
    return out

