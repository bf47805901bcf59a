"""A registry-wide mutex built on MLflow's one unique constraint.

MLflow has no transactions and no compare-and-set, but creating a registered
model is unique (SQL primary key, the same on SQLite and behind ``mlflow
server``): ``create_registered_model("llmops-lock-<resource>")`` succeeds for
exactly one caller and fails with ``RESOURCE_ALREADY_EXISTS`` for the others.
The lock model's tags carry a token, the holder and an expiry:

* **the same holder takes it over at once** — a holder is recognisable (a
  rollout id: ``rollout:<id>``), so a controller rerun after a crash does not
  wait for its own leftover lock;
* **anyone takes it over after expiry** — renamed to a unique tombstone first,
  then checked by token, so two takers cannot both win;
* a long holder keeps it alive with a heartbeat (``renew_every_s``).

Used for promotions (:mod:`model_registry.promotion`, resource ``<name>``) and
registration claims (:mod:`model_registry.registration`, resource
``<name>.register-<key>``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from model_registry.client import Connection
from model_registry.errors import PromotionConflict, RegistryError

log = logging.getLogger(__name__)

LOCK_PREFIX = "llmops-lock-"  # reserved registered-model names
TOKEN_TAG = "llmops.lock.token"
OWNER_TAG = "llmops.lock.owner"
ACQUIRED_TAG = "llmops.lock.acquired_at"
EXPIRES_TAG = "llmops.lock.expires_at"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def process_holder() -> str:
    """A holder id unique to this process and thread: ``host:pid:thread``."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def _code(exc: BaseException) -> str | None:
    return getattr(exc.__cause__, "error_code", None) or getattr(exc, "error_code", None)


@dataclass
class RegistryLock:
    """A mutex named ``llmops-lock-<resource>`` (see the module docstring).

    Args (fields):
        conn: registry connection.
        resource: what is locked (a registered model name, or a claim key).
        ttl_s: the lock expires this long after it was taken (or last renewed).
        clock: epoch seconds (injected in tests).
        owner: the holder id; the same owner takes a leftover lock over at once.
        renew_every_s: heartbeat period while held (None: no heartbeat).
        activity: what the lock protects, for messages.
    """

    conn: Connection
    resource: str
    ttl_s: float = 60.0
    clock: Callable[[], float] = time.time
    owner: str = field(default_factory=process_holder)
    renew_every_s: float | None = None
    activity: str = "operation"  # named in the conflict message: "another promotion of 'llm' is in progress"
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    held: bool = False
    _stop: threading.Event | None = None

    @property
    def lock_name(self) -> str:
        return f"{LOCK_PREFIX}{self.resource}"

    def _tags(self, now: float) -> dict[str, str]:
        return {TOKEN_TAG: self.token, OWNER_TAG: self.owner, ACQUIRED_TAG: _iso(now), EXPIRES_TAG: f"{now + self.ttl_s:.3f}"}

    def try_create(self) -> bool:
        """Create the lock model; False when it exists already."""
        try:
            with self.conn.guard():
                self.conn.client.create_registered_model(
                    self.lock_name, tags=self._tags(self.clock()),
                    description=f"llmops lock on {self.resource}; deleted when released",
                )
        except RegistryError as exc:
            if _code(exc) == "RESOURCE_ALREADY_EXISTS":
                return False
            raise
        return True

    def current(self):
        """The lock model as stored now, or None."""
        try:
            with self.conn.guard():
                return self.conn.client.get_registered_model(self.lock_name)
        except RegistryError as exc:
            if _code(exc) == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def take_over(self, holder) -> bool:
        """Remove ``holder`` (the lock as read); True if this caller removed exactly that lock."""
        stale_token = (holder.tags or {}).get(TOKEN_TAG)
        tomb = f"{self.lock_name}.stale-{uuid.uuid4().hex[:12]}"
        try:
            with self.conn.guard():
                self.conn.client.rename_registered_model(self.lock_name, tomb)
                moved = self.conn.client.get_registered_model(tomb)
        except RegistryError as exc:
            if _code(exc) in {"RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS"}:
                return False
            raise
        if (moved.tags or {}).get(TOKEN_TAG) != stale_token:
            # renamed a lock someone took in between: give it back, then lose
            try:
                with self.conn.guard():
                    self.conn.client.rename_registered_model(tomb, self.lock_name)
            except RegistryError:
                log.warning("could not restore lock %s from %s", self.lock_name, tomb)
            return False
        with self.conn.guard():
            self.conn.client.delete_registered_model(tomb)
        return True

    def describe(self, holder) -> str:
        tags = holder.tags or {}
        expires = float(tags.get(EXPIRES_TAG, "0") or 0)
        return (
            f"lock {self.lock_name!r} held by {tags.get(OWNER_TAG, 'unknown')} since "
            f"{tags.get(ACQUIRED_TAG, '?')}, expires {_iso(expires)}"
        )

    def try_acquire(self) -> tuple[bool, object | None]:
        """One attempt: ``(True, None)`` when taken, ``(False, holder)`` when someone else holds it."""
        for _ in range(3):
            if self.try_create():
                self._held()
                return True, None
            holder = self.current()
            if holder is None:
                continue  # released between our two calls
            tags = holder.tags or {}
            same = tags.get(OWNER_TAG) == self.owner
            expired = float(tags.get(EXPIRES_TAG, "0") or 0) <= self.clock()
            if not (same or expired):
                return False, holder
            if self.take_over(holder):
                log.warning(
                    "took over %s lock on %s held by %s",
                    "our own leftover" if same else "an expired", self.resource, tags.get(OWNER_TAG),
                )
        return False, self.current()

    def acquire(self) -> None:
        """Take the lock or raise :class:`PromotionConflict` at once (no waiting)."""
        ok, holder = self.try_acquire()
        if ok:
            return
        if holder is None:
            raise PromotionConflict(f"could not take the {self.activity} lock of {self.resource!r} (contended); retry")
        raise PromotionConflict(
            f"another {self.activity} of {self.resource!r} is in progress ({self.describe(holder)}); wait for it "
            f"to finish and retry, or, if its holder crashed, delete registered model {self.lock_name!r}"
        )

    def _held(self) -> None:
        self.held = True
        if self.renew_every_s:
            self._stop = threading.Event()
            threading.Thread(target=self._heartbeat, args=(self._stop,), daemon=True, name=f"lock-{self.resource}").start()

    def _heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(self.renew_every_s):
            try:
                with self.conn.guard():
                    self.conn.client.set_registered_model_tag(self.lock_name, EXPIRES_TAG, f"{self.clock() + self.ttl_s:.3f}")
            except Exception as exc:  # the lock expires by itself if the server stays away
                log.warning("could not renew lock %s: %s", self.lock_name, exc)

    def release(self) -> None:
        """Delete the lock if this caller still holds it."""
        if not self.held:
            return
        self.held = False
        if self._stop is not None:
            self._stop.set()
        holder = self.current()
        if holder is None or (holder.tags or {}).get(TOKEN_TAG) != self.token:
            log.warning("lock on %s was taken over before release", self.resource)
            return
        with self.conn.guard():
            self.conn.client.delete_registered_model(self.lock_name)

    def __enter__(self) -> RegistryLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.release()
        except RegistryError as err:
            log.warning("could not release lock %s: %s", self.lock_name, err)
