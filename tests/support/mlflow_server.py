"""Run a real ``mlflow server`` for tests (SQLite backend, local artifact folder, loopback).

``run_mlflow_server(workdir)`` starts ``mlflow server`` on a free loopback port
with its SQLite store and proxied artifact folder in ``workdir``, waits for
``/health`` and yields an :class:`MlflowServer` (``.uri`` is the tracking URI);
the process group is killed on exit. ``server.kill()`` simulates a crash,
``server.start()`` brings it back on the same port with the same store.

    with run_mlflow_server(tmp_path / "mlflow") as server:
        client = MlflowClient(server.uri)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MlflowServer:
    """A ``mlflow server`` process owned by a test."""

    workdir: Path  # holds mlflow.db, artifacts/ and server.log
    port: int = field(default_factory=free_port)  # loopback port, kept across restarts
    proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def backend_store_uri(self) -> str:
        return f"sqlite:///{(self.workdir / 'mlflow.db').as_posix()}"

    @property
    def artifacts_dir(self) -> Path:
        return self.workdir / "artifacts"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def start(self, ready_timeout_s: float = 120.0) -> MlflowServer:
        """Start the server (again) and wait until ``/health`` answers 200."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.artifacts_dir.mkdir(exist_ok=True)
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        cmd = [
            str(mlflow_bin) if mlflow_bin.exists() else "mlflow",
            "server",
            "--backend-store-uri", self.backend_store_uri,
            "--artifacts-destination", str(self.artifacts_dir),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", "1",
        ]  # fmt: skip
        env = {**os.environ, "MLFLOW_ENABLE_TELEMETRY": "false", "DO_NOT_TRACK": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=self.workdir
            )
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}: {self._log_tail()}")
            try:
                if httpx.get(f"{self.uri}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"mlflow server not healthy after {ready_timeout_s}s: {self._log_tail()}")
            time.sleep(0.25)

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the server's process group (a crash: no clean shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 3 s."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.contextmanager
def run_mlflow_server(workdir: str | Path, ready_timeout_s: float = 120.0) -> Iterator[MlflowServer]:
    """Start ``mlflow server`` with its store in ``workdir``; yield it; kill it on exit.

    Raises:
        RuntimeError: the server exited or did not become healthy (with its log tail).
    """
    server = MlflowServer(Path(workdir))
    try:
        server.start(ready_timeout_s)
        yield server
    finally:
        server.stop()
