"""A real OCI registry for tests: Debian's ``docker-registry`` (distribution 2.8) on loopback.

Usage::

    from tests.support.oci_registry import run_registry

    with run_registry(tmp_path) as reg:          # or run_registry(tmp_path, auth=("user", "pw"))
        push_to(f"{reg.host}/models/tiny:v1")   # reg.host == "127.0.0.1:<free port>"
        reg.kill(); reg.start()                  # crash and restart on the same port and storage

Each registry gets a free port, its own storage folder and a generated
``config.yml``; basic auth uses an htpasswd file hashed with the ``bcrypt``
package (no ``htpasswd`` binary needed).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

REGISTRY_BIN = "/usr/bin/docker-registry"


def registry_available() -> str | None:
    """``None`` when the registry binary is installed, else why not (for ``pytest.skip``)."""
    if shutil.which("docker-registry") or os.path.exists(REGISTRY_BIN):
        return None
    return "docker-registry is not installed: apt-get install docker-registry (scripts/setup.sh does it)"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_htpasswd(path: Path, username: str, password: str) -> None:
    """An htpasswd file with one bcrypt entry (the only hash distribution accepts)."""
    import bcrypt

    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
    path.write_text(f"{username}:{hashed}\n")


@dataclass
class LocalRegistry:
    """A running docker-registry process."""

    root: Path  # folder with config.yml, storage/, log
    port: int  # loopback port it listens on
    auth: tuple[str, str] | None = None  # basic-auth user and password, when enabled
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    def write_config(self) -> Path:
        cfg: dict = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
        }
        if self.auth:
            htpasswd = self.root / "htpasswd"
            write_htpasswd(htpasswd, *self.auth)
            cfg["auth"] = {"htpasswd": {"realm": "llmops-test", "path": str(htpasswd)}}
        path = self.root / "config.yml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def start(self, timeout: float = 30.0) -> None:
        """Start (or restart) the process and wait until ``/v2/`` answers."""
        config = self.root / "config.yml"
        if not config.exists():
            self.write_config()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [shutil.which("docker-registry") or REGISTRY_BIN, "serve", str(config)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/v2/", timeout=1.0).status_code in (200, 401):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.host} within {timeout}s: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL, as a crash would (no graceful shutdown)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def tags(self, repository: str) -> list[str]:
        """Tags of a repository as the registry lists them ([] when the repository is unknown)."""
        auth = httpx.BasicAuth(*self.auth) if self.auth else None
        resp = httpx.get(f"{self.url}/v2/{repository}/tags/list", auth=auth, timeout=10)
        if resp.status_code == 404:
            return []
        resp.raise_for_status()
        return resp.json().get("tags") or []


@contextmanager
def run_registry(workdir: Path, *, auth: tuple[str, str] | None = None) -> Iterator[LocalRegistry]:
    """Start a docker-registry on a free loopback port with storage under ``workdir``; stop it after.

    Args:
        workdir: folder for config, storage and log (created).
        auth: ``(username, password)`` to require HTTP basic auth (htpasswd, bcrypt).
    """
    workdir = Path(workdir)
    last: Exception | None = None
    for _ in range(3):  # a free port can be taken between picking and binding it
        workdir.mkdir(parents=True, exist_ok=True)
        reg = LocalRegistry(root=workdir, port=free_port(), auth=auth)
        reg.write_config()
        try:
            reg.start()
            break
        except RuntimeError as exc:
            last = exc
            (workdir / "config.yml").unlink(missing_ok=True)
    else:
        raise RuntimeError(f"could not start docker-registry: {last}")
    try:
        yield reg
    finally:
        reg.stop()
