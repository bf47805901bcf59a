"""Local services for the embedded default: the OCI image registry.

``llmops run`` pushes images to a real registry when Debian's ``docker-registry``
(CNCF distribution) is installed: it is started once, detached, on loopback,
with its storage and PID under the state folder, and reused by later runs.
Without it the image step writes an OCI image layout folder instead.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

log = logging.getLogger(__name__)

REGISTRY_BINARY = "docker-registry"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _answers(addr: str) -> bool:
    try:
        return httpx.get(f"http://{addr}/v2/", timeout=1.0).status_code in (200, 401)
    except httpx.HTTPError:
        return False


def ensure_local_registry(state_dir: str | Path, timeout_s: float = 20.0) -> str | None:
    """Return ``host:port`` of the local registry, starting it if needed.

    Returns ``None`` when ``docker-registry`` is not installed (the caller then
    writes an OCI layout). Raises ``RuntimeError`` when it is installed but
    does not come up, with the log file to read.
    """
    binary = shutil.which(REGISTRY_BINARY)
    if binary is None:
        return None
    root = Path(state_dir) / "registry"
    root.mkdir(parents=True, exist_ok=True)
    record = root / "registry.json"
    if record.exists():
        info = json.loads(record.read_text())
        if _alive(info["pid"]) and _answers(info["addr"]):
            return info["addr"]
    addr = f"127.0.0.1:{_free_port()}"
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {root / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: {addr}\n"
    )
    logf = open(root / "registry.log", "ab")
    proc = subprocess.Popen(
        [binary, "serve", str(config)], stdout=logf, stderr=logf, start_new_session=True
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if _answers(addr):
            record.write_text(json.dumps({"pid": proc.pid, "addr": addr}))
            log.info("local image registry on %s (pid %s)", addr, proc.pid)
            return addr
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(
        f"docker-registry did not start on {addr}; see {root / 'registry.log'}"
    )


def stop_local_registry(state_dir: str | Path) -> bool:
    """Stop the registry started by :func:`ensure_local_registry`; True if one ran."""
    record = Path(state_dir) / "registry" / "registry.json"
    if not record.exists():
        return False
    info = json.loads(record.read_text())
    record.unlink()
    if _alive(info["pid"]):
        os.killpg(info["pid"], signal.SIGTERM)
        return True
    return False
