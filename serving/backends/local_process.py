"""The local backend's processes: start them detached, tell whether they live, stop them.

:class:`Processes` starts every model server and router of one backend object
(its own session, so it outlives the Python process that started it), keeps the
``Popen`` handles to reap them, and writes the spawn journal that lets the next
lock holder stop a process whose start never reached ``state.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

from llmops_core.faults import kill_point
from serving.backends.base import BackendUnavailable
from serving.backends.local_store import atomic_write_json

log = logging.getLogger("serving.backends.local")  # one logger for the whole backend, as before the split

def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def process_alive(pid: int | None, create_time: float | None) -> bool:
    """True when ``pid`` still runs and is the process we started (not a reused PID)."""
    import psutil

    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 1.0:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def process_create_time(pid: int) -> float | None:
    """When ``pid`` started (psutil's ``create_time``), or None when it is gone."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def log_tail(path: Path, lines: int = 6, max_bytes: int = 16384) -> str:
    """The last non-empty lines of a log file, joined with `` | ``."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(kept[-lines:])


def http_ok(url: str, timeout: float) -> bool:
    """Whether a GET of ``url`` answers 200 within ``timeout`` seconds."""
    import httpx

    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


class Processes:
    """The processes one backend object started, and the spawn journal every holder of the state shares.

    Spawn journal: a process is recorded in ``procs/<pid>.json`` the moment it starts, before
    ``state.json`` is saved; a controller killed in between leaves an entry that the next lock
    holder (a rerun, ``llmops down``) finds and stops, so no model server is orphaned or duplicated.

    Args:
        journal_dir: the ``procs`` folder of the state folder (made on the first spawn).
    """

    def __init__(self, journal_dir: Path) -> None:
        self.journal_dir = journal_dir
        self.children: dict[int, subprocess.Popen] = {}  # reaped when seen dead

    def spawn(self, argv: list[str], log_file: Path, exit_file: Path | None, env: dict[str, str]) -> subprocess.Popen:
        """Start a detached process group; a launcher shell records the exit status."""
        if exit_file is not None:
            # "$0" is the exit file; the shell stays as parent to write the status.
            argv = ["/bin/sh", "-c", '"$@"; echo $? > "$0"', str(exit_file), *argv]
        try:
            with open(log_file, "ab") as out:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            raise BackendUnavailable(f"cannot start {shlex.join(argv)}: {exc}") from exc
        self.children[proc.pid] = proc
        self._journal(proc, argv)
        kill_point("local.spawned")  # crash-resume tests: killed before state.json records the process
        return proc

    def stop(self, proc_record: dict[str, Any], what: str, timeout_s: float) -> None:
        """SIGTERM a process group, wait for it, then SIGKILL what is left."""
        import psutil

        pid = proc_record.get("pid")
        if pid and process_alive(pid, proc_record.get("create_time")):
            try:
                leader = psutil.Process(pid)
                procs = [leader, *leader.children(recursive=True)]
            except psutil.Error:
                procs = []
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
            _, alive = psutil.wait_procs(procs, timeout=timeout_s)
            if alive:
                log.warning("%s did not stop within %.0fs; killing it", what, timeout_s)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                psutil.wait_procs(alive, timeout=5)
            log.info("stopped %s (pid %d)", what, pid)
        if pid:
            self.forget(pid)
        proc_record.update(pid=None, create_time=None, state="Stopped")

    def reap(self) -> None:
        """Collect the exit status of every child that ended."""
        for pid, child in list(self.children.items()):
            if child.poll() is not None:
                self.children.pop(pid, None)

    def forget(self, pid: int) -> None:
        """Stop tracking ``pid`` (reaping it if it is our child)."""
        child = self.children.pop(pid, None)
        if child is not None:
            child.poll()

    def _journal(self, proc: subprocess.Popen, argv: list[str]) -> None:
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.journal_dir / f"{proc.pid}.json",
                          {"pid": proc.pid, "create_time": process_create_time(proc.pid), "argv": argv})

    def _entries(self) -> list[tuple[Path, dict[str, Any]]]:
        out = []
        for path in sorted(self.journal_dir.glob("*.json")) if self.journal_dir.is_dir() else ():
            try:
                out.append((path, json.loads(path.read_text())))
            except (OSError, ValueError):
                out.append((path, {}))
        return out

    def prune_journal(self, recorded: set[int]) -> None:
        """Drop the entries of processes ``state.json`` records, or that are gone."""
        for path, entry in self._entries():
            if entry.get("pid") in recorded or not process_alive(entry.get("pid"), entry.get("create_time")):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def stop_orphans(self, recorded: set[int], timeout_s: float) -> None:
        """Stop processes started by a holder that died before saving state.json (under the lock).

        Args:
            recorded: the PIDs ``state.json`` records.
            timeout_s: grace period between SIGTERM and SIGKILL.
        """
        for path, entry in self._entries():
            pid = entry.get("pid")
            if pid in recorded or pid in self.children:
                continue
            if process_alive(pid, entry.get("create_time")):
                log.warning("stopping orphaned process %s (started but never recorded): %s", pid,
                            shlex.join(entry.get("argv") or []))
                self.stop({"pid": pid, "create_time": entry.get("create_time")}, f"orphaned process {pid}", timeout_s)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
