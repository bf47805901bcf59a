"""Promotion and rollback: move alias ``champion`` safely and record why.

MLflow has no compare-and-set on aliases, so a promotion runs under a lock
built on MLflow's own unique constraint: creating the registered model
``llmops-lock-<name>`` succeeds for exactly one caller and fails with
``RESOURCE_ALREADY_EXISTS`` for the others (SQL primary key, same on SQLite
and behind ``mlflow server``). The lock carries a token, its owner and an
expiry (:mod:`model_registry.lock`); the same rollout (``rollout_id``) takes
its own leftover lock over at once, anyone else after it expires. Under the lock,
``expected_champion`` is compared with the current champion: a caller that
evaluated against a champion that has since moved gets
:class:`PromotionConflict` instead of silently overwriting it.

Events go to registered-model tags ``llmops.event.<epoch-ms>-<random>`` (JSON),
unique and time-ordered, so :func:`model_registry.queries.history` reads them
back in order with one call. An event carries the ``rollout_id`` that wrote
it; a rerun of that rollout finds it and writes nothing twice.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from llmops_core.faults import kill_point
from model_registry.client import Connection, connect
from model_registry.errors import PromotionConflict, RegistryError
from model_registry.lock import RegistryLock, process_holder
from model_registry.queries import read_history
from model_registry.lock import LOCK_PREFIX
from model_registry.registration import get_ready_version, require_model
from model_registry.types import (
    ANY,
    CHALLENGER,
    CHAMPION,
    EVENT_TAG_PREFIX,
    PREVIOUS_CHAMPION,
    TAG_PREFIX,
    Event,
    PromotionEvent,
)

log = logging.getLogger(__name__)

DEFAULT_LOCK_TTL_S = 60.0  # another holder's leftover lock is taken over after this long (the same rollout: at once)
MAX_REPORT_CHARS = 50_000  # larger rollback reports are replaced by a summary


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def lock_name(name: str) -> str:
    return f"{LOCK_PREFIX}{name}"


def PromotionLock(  # noqa: N802 - kept as the name callers and tests know
    conn: Connection,
    name: str,
    ttl_s: float = DEFAULT_LOCK_TTL_S,
    clock: Callable[[], float] = time.time,
    owner: str | None = None,
) -> RegistryLock:
    """The promotion lock of registered model ``name`` (``llmops-lock-<name>``).

    Args:
        conn: registry connection.
        name: the registered model being promoted.
        ttl_s: expiry of the lock.
        clock: epoch seconds.
        owner: the holder; ``rollout:<id>`` lets the same rollout take a leftover lock over at once.
    """
    return RegistryLock(conn, name, ttl_s=ttl_s, clock=clock, owner=owner or process_holder(), activity="promotion")


def lock_owner(rollout_id: str | None) -> str:
    """The lock holder of a promotion: the rollout when known (recognisable after a crash), else this process."""
    return f"rollout:{rollout_id}" if rollout_id else process_holder()


def _recorded(conn: Connection, name: str, kind: str, rollout_id: str | None) -> Event | None:
    """The event of ``kind`` that rollout ``rollout_id`` already wrote, if any (a rerun writes nothing twice)."""
    if not rollout_id:
        return None
    for event in reversed(read_history(conn, name)):
        if event.kind == kind and event.rollout_id == rollout_id:
            return event
    return None


def _norm(version: object) -> str | None:
    return None if version is None else str(version)


def _write_event(conn: Connection, name: str, event: Event, now: float) -> Event:
    event_id = f"{int(now * 1000):013d}-{uuid.uuid4().hex[:8]}"
    with conn.guard():
        conn.client.set_registered_model_tag(name, EVENT_TAG_PREFIX + event_id, event.to_json())
    return type(event)(**{**event.__dict__, "event_id": event_id})


def _set_alias(conn: Connection, name: str, alias: str, version: str | None) -> None:
    with conn.guard():
        if version is None:
            try:
                conn.client.delete_registered_model_alias(name, alias)
            except Exception as exc:  # absent alias: nothing to delete
                if getattr(exc, "error_code", None) not in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                    raise
        else:
            conn.client.set_registered_model_alias(name, alias, version)


def promote(
    name: str,
    version: str | int,
    *,
    trigger: str,
    reason: str = "",
    report_url: str | None = None,
    expected_champion: str | int | None | object = ANY,
    tracking_uri: str | None = None,
    lock_ttl_s: float = DEFAULT_LOCK_TTL_S,
    clock: Callable[[], float] = time.time,
    rollout_id: str | None = None,
) -> PromotionEvent:
    """Make ``version`` the champion (after a finished rollout) and record the event.

    The old champion keeps alias ``previous-champion``; ``challenger`` is
    removed if it pointed at ``version``. Promoting the current champion again
    returns its last promotion event (idempotent retry).

    Args:
        name: registered model name.
        version: the version to promote.
        trigger: what caused it ("pipeline", "ci", "manual", ...).
        reason: free text for the history.
        report_url: link to the rollout or evaluation report.
        expected_champion: the champion the caller evaluated against (None = no
            champion yet); :data:`ANY` skips the check.
        tracking_uri: MLflow tracking URI.
        lock_ttl_s: expiry of the promotion lock.
        clock: time source (epoch seconds).
        rollout_id: the rollout promoting (recorded on the event and the lock): a
            rerun of the same rollout takes its leftover lock over at once and
            returns the event it already wrote instead of writing another.

    Returns:
        The recorded :class:`PromotionEvent`.

    Raises:
        PromotionConflict: another promotion holds the lock, or the champion is
            not ``expected_champion``.
        ModelNotFound, VersionNotFound: unknown name or version.
    """
    if not trigger or not str(trigger).strip():
        raise ValueError("promote() needs a trigger, e.g. 'pipeline', 'ci' or 'manual'")
    conn = connect(tracking_uri)
    target = str(get_ready_version(conn, name, str(version)).version)
    with PromotionLock(conn, name, ttl_s=lock_ttl_s, clock=clock, owner=lock_owner(rollout_id)):
        aliases = dict(require_model(conn, name).aliases or {})
        current = _norm(aliases.get(CHAMPION))
        done = _recorded(conn, name, "promotion", rollout_id)
        if done is not None and current == target:
            log.info("%s: rollout %s already promoted version %s", name, rollout_id, target)
            return done
        if current == target:
            last = next((e for e in reversed(read_history(conn, name)) if isinstance(e, PromotionEvent)), None)
            if last is not None and last.to_version == target:
                log.info("%s version %s is already champion: returning its promotion event", name, target)
                return last
            # else: the alias moved but the event was never written (a crash in between): write it now
        elif expected_champion is not ANY and _norm(expected_champion) != current:
            raise PromotionConflict(
                f"cannot promote {name!r} version {target}: the champion is "
                f"{'version ' + current if current else 'not set'}, expected "
                f"{'version ' + str(expected_champion) if expected_champion is not None else 'no champion'}; "
                "another promotion won the race: evaluate against the new champion and promote again"
            )
        now = clock()
        event = PromotionEvent(
            kind="promotion",
            time=_iso(now),
            trigger=str(trigger),
            from_version=current if current != target else _norm(aliases.get(PREVIOUS_CHAMPION)),
            to_version=target,
            reason=reason,
            report_url=report_url,
            rollout_id=rollout_id,
        )
        kill_point("registry.promote.locked")
        try:
            if current is not None and current != target:
                _set_alias(conn, name, PREVIOUS_CHAMPION, current)
                kill_point("registry.promote.previous_moved")
            _set_alias(conn, name, CHAMPION, target)
            kill_point("registry.promote.champion_moved")
            if _norm(aliases.get(CHALLENGER)) == target:
                _set_alias(conn, name, CHALLENGER, None)
            recorded = _write_event(conn, name, event, now)
            kill_point("registry.promote.event_written")
            with conn.guard():
                conn.client.set_model_version_tag(name, target, TAG_PREFIX + "promoted_at", event.time)
        except BaseException:
            _restore_aliases(conn, name, aliases)
            raise
    log.info("%s: champion %s -> %s (%s)", name, current, target, trigger)
    return recorded


def _restore_aliases(conn: Connection, name: str, aliases: dict) -> None:
    for alias in (CHAMPION, PREVIOUS_CHAMPION, CHALLENGER):
        try:
            _set_alias(conn, name, alias, _norm(aliases.get(alias)))
        except RegistryError as exc:
            log.error("could not restore alias %s of %s to %s: %s", alias, name, aliases.get(alias), exc)


def _compact_report(report: dict | None) -> dict | None:
    if report is None:
        return None
    text = json.dumps(report, sort_keys=True, default=str)
    if len(text) <= MAX_REPORT_CHARS:
        return json.loads(text)
    return {"truncated": True, "size_chars": len(text), "keys": sorted(map(str, report))[:100]}


def record_rollback(
    name: str,
    version: str | int,
    *,
    reason: str,
    report_url: str | None = None,
    report: dict | None = None,
    tracking_uri: str | None = None,
    trigger: str = "rollout",
    clock: Callable[[], float] = time.time,
    rollout_id: str | None = None,
    same_version_serves: bool = False,
) -> Event:
    """Record that the rollout of ``version`` was rolled back.

    If ``version`` is not the champion (a canary that regressed), the champion
    stays and ``challenger`` is cleared if it pointed at ``version``. If it is
    the champion, ``champion`` moves back to ``previous-champion`` -- unless
    ``same_version_serves``: the rollout re-rolled the serving version with a
    new spec (runtime, image, arguments), and that version, on its old spec,
    is what serves after the rollback, so ``champion`` stays on it.

    Args:
        name: registered model name.
        version: the version that was rolled back.
        reason: why (the analysis verdict).
        report_url: link to the rollout report.
        report: small structured analysis report (JSON-serialisable).
        tracking_uri: MLflow tracking URI.
        trigger: what caused it (default "rollout").
        clock: time source (epoch seconds).
        rollout_id: the rollout rolling back: a rerun returns the event it already
            wrote (nothing is recorded or moved twice) and takes its leftover lock over at once.
        same_version_serves: the version rolled back is also the one serving afterwards (see above).

    Returns:
        The recorded :class:`Event` (``kind == "rollback"``).

    Raises:
        RegistryError: ``version`` is the champion and no previous champion exists.
        PromotionConflict: a promotion holds the lock.
        ModelNotFound, VersionNotFound: unknown name or version.
    """
    if not reason or not str(reason).strip():
        raise ValueError("record_rollback() needs a reason (the analysis verdict)")
    conn = connect(tracking_uri)
    target = str(get_ready_version(conn, name, str(version)).version)
    with PromotionLock(conn, name, clock=clock, owner=lock_owner(rollout_id)):
        done = _recorded(conn, name, "rollback", rollout_id)
        if done is not None:
            log.info("%s: rollout %s already recorded the rollback of version %s", name, rollout_id, target)
            return done
        aliases = dict(require_model(conn, name).aliases or {})
        current = _norm(aliases.get(CHAMPION))
        now = clock()
        kill_point("registry.rollback.locked")
        try:
            if current == target and not same_version_serves:
                previous = _norm(aliases.get(PREVIOUS_CHAMPION))
                if previous is None:
                    raise RegistryError(
                        f"cannot roll back {name!r} version {target}: it is the champion and no previous "
                        "champion exists; promote another version instead"
                    )
                before = None
                for event in reversed(read_history(conn, name)):
                    if event.kind == "promotion" and event.to_version == previous:
                        before = event.from_version
                        break
                _set_alias(conn, name, CHAMPION, previous)
                kill_point("registry.rollback.champion_moved")
                _set_alias(conn, name, PREVIOUS_CHAMPION, before if before != previous else None)
                back_to = previous
            else:
                back_to = current
            if _norm(aliases.get(CHALLENGER)) == target:
                _set_alias(conn, name, CHALLENGER, None)
            event = _write_event(
                conn,
                name,
                Event(
                    kind="rollback",
                    time=_iso(now),
                    trigger=str(trigger),
                    from_version=target,
                    to_version=back_to,
                    reason=reason,
                    report_url=report_url,
                    report=_compact_report(report),
                    rollout_id=rollout_id,
                ),
                now,
            )
            kill_point("registry.rollback.event_written")
            with conn.guard():
                conn.client.set_model_version_tag(name, target, TAG_PREFIX + "rollout_outcome",
                                                  "respec_rolled_back" if same_version_serves else "rolled_back")
                conn.client.set_model_version_tag(name, target, TAG_PREFIX + "rolled_back_at", event.time)
        except BaseException:
            _restore_aliases(conn, name, aliases)
            raise
    log.info("%s: rolled back version %s, serving %s", name, target, back_to)
    return event
