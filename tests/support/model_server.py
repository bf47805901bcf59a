"""Start the real LLM model server (``python -m serving``) on a free loopback port.

Reusable by any test::

    from tests.support.model_server import model_server

    with model_server(tiny_model, model_name="tiny", model_version="v1") as url:
        httpx.get(f"{url}/v2/health/ready")

The server binds port 0 on 127.0.0.1 (no port races between parallel tests); the
port is read from uvicorn's "Uvicorn running on ..." log line. On exit the process
gets SIGTERM (graceful drain), then SIGKILL if it has not stopped in time.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
_RUNNING = re.compile(r"Uvicorn running on https?://([^:\s]+):(\d+)")


class ModelServerError(RuntimeError):
    """The server process exited or did not become ready; the message holds its log tail."""


@dataclass
class RunningServer:
    """A started server process."""

    process: subprocess.Popen  # the ``python -m serving`` process
    url: str  # base URL, e.g. http://127.0.0.1:40123
    _lines: list[str] = field(default_factory=list)

    @property
    def log(self) -> str:
        """Everything the process printed so far."""
        return "".join(self._lines)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL. Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def start_model_server(
    model_dir: str | Path,
    *,
    model_name: str = "model",
    model_version: str = "v1",
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    ready_timeout_s: float = 120.0,
) -> RunningServer:
    """Start the server and wait until ``/v2/health/ready`` answers 200.

    Args:
        model_dir: Hugging Face model folder.
        model_name: ``--model_name``.
        model_version: ``--model_version``.
        args: extra flags, e.g. ``["--max_queue", "4", "--fault_error_rate", "0.5"]``.
        env: extra environment variables.
        ready_timeout_s: how long to wait for readiness.

    Raises:
        ModelServerError: the process exited or never became ready (with its log tail).
    """
    cmd = [
        sys.executable, "-m", "serving",
        "--model_dir", str(model_dir),
        "--model_name", model_name,
        "--model_version", model_version,
        "--http_host", "127.0.0.1",
        "--http_port", "0",
        *args,
    ]  # fmt: skip
    proc_env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", **(env or {})}
    proc_env.setdefault("LLMOPS_TORCH_THREADS", "1")  # test servers share a small machine (flag or env overrides)
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=proc_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    lines: list[str] = []
    found = threading.Event()
    address: list[str] = []

    def pump() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            m = _RUNNING.search(line)
            if m and not found.is_set():
                address.append(f"http://{m.group(1)}:{m.group(2)}")
                found.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + ready_timeout_s
    while not found.wait(0.1):
        if proc.poll() is not None or time.monotonic() > deadline:
            _abort(proc)
            raise ModelServerError(f"model server did not start (exit {proc.returncode}):\n{''.join(lines)[-4000:]}")
    server = RunningServer(proc, address[0], lines)
    with httpx.Client(timeout=5) as client:
        while True:
            try:
                if client.get(f"{server.url}/v2/health/ready").status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                _abort(proc)
                raise ModelServerError(f"model server never became ready:\n{server.log[-4000:]}")
            time.sleep(0.1)


def _abort(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


@contextmanager
def running_model_server(model_dir: str | Path, **kwargs) -> Iterator[RunningServer]:
    """Context manager around :func:`start_model_server` yielding the :class:`RunningServer`."""
    server = start_model_server(model_dir, **kwargs)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def model_server(model_dir: str | Path, **kwargs) -> Iterator[str]:
    """Context manager yielding the base URL of a started server (see :func:`start_model_server`)."""
    with running_model_server(model_dir, **kwargs) as server:
        yield server.url
