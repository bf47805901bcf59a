"""The local backend's state file: ``state.json`` read, modified and written under an ``fcntl.flock``.

Every process that points a backend at one state folder shares it; :meth:`StateStore.locked`
is reentrant within one store object (threads wait their turn) and saves only a changed state.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from serving.backends.base import BackendUnavailable

STATE_VERSION = 1


class StateStore:
    """``state.json`` and ``state.lock`` of one state folder.

    Args:
        state_dir: the backend's state folder.
        after_load: called with the state right after the outermost lock is taken.
        after_save: called with the state right after it was written.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        after_load: Callable[[dict[str, Any]], None],
        after_save: Callable[[dict[str, Any]], None],
    ) -> None:
        self.state_dir = state_dir
        self._after_load = after_load
        self._after_save = after_save
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._lock_fh: Any = None
        self._state: dict[str, Any] | None = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """Hold the state lock (reentrant) and yield the state; save it on success."""
        with self._thread_lock:
            outer = self._depth == 0
            if outer:
                try:
                    self._lock_fh = open(self.state_dir / "state.lock", "a+")
                    fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_EX)
                except OSError as exc:
                    raise BackendUnavailable(f"cannot lock {self.state_dir / 'state.lock'}: {exc}") from exc
                self._state = self.load()
                self._after_load(self._state)
                loaded = json.dumps(self._state, sort_keys=True)
            self._depth += 1
            try:
                yield self._state
                if outer and json.dumps(self._state, sort_keys=True) != loaded:
                    self.save(self._state)
            finally:
                self._depth -= 1
                if outer:
                    fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
                    self._lock_fh.close()
                    self._lock_fh = None
                    self._state = None

    def load(self) -> dict[str, Any]:
        """The state as saved (an empty one when there is no file yet)."""
        path = self.state_dir / "state.json"
        try:
            with open(path, encoding="utf-8") as fh:
                state = json.load(fh)
        except FileNotFoundError:
            return {"version": STATE_VERSION, "resourceVersion": 0, "services": {}}
        except (OSError, json.JSONDecodeError) as exc:
            raise BackendUnavailable(
                f"local serving state {path} is unreadable ({exc}); stop the processes it lists "
                "by hand or move the folder away and apply again"
            ) from exc
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Replace ``state.json`` atomically."""
        atomic_write_json(self.state_dir / "state.json", state)
        self._after_save(state)


def recorded_pids(state: dict[str, Any]) -> set[int]:
    """The PIDs of every revision and router the state records."""
    pids = set()
    for record in state.get("services", {}).values():
        pids.update(r["pid"] for r in record.get("revisions", {}).values() if r.get("pid"))
        if record.get("router", {}).get("pid"):
            pids.add(record["router"]["pid"])
    return pids


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to a temporary file beside ``path``, fsync it, and rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
