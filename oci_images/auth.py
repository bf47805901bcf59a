"""Registry credentials: explicit ones, or read from the Docker config file.

The Docker config (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``)
keeps ``auths: {host: {auth: base64(user:password)}}``, or names a credential
helper (``credHelpers``/``credsStore``) that prints them; both are read here.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from oci_images.errors import AuthError
from oci_images.reference import DOCKER_HUB, DOCKER_HUB_API

log = logging.getLogger(__name__)

_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", DOCKER_HUB, DOCKER_HUB_API)


@dataclass(frozen=True)
class Credentials:
    """Credentials for one registry: a user and password, or a bearer token."""

    username: str | None = None  # basic-auth user (also sent to a token service)
    password: str | None = None  # basic-auth password or access token
    token: str | None = None  # a registry bearer token used as is (no token dance)

    def validate(self) -> None:
        """Raise ``ValueError`` unless exactly one form (user+password, or token) is given."""
        if self.token and (self.username or self.password):
            raise ValueError("Credentials: give either username+password or token, not both")
        if not self.token and not (self.username and self.password is not None):
            raise ValueError("Credentials: give username and password, or token")

    def __repr__(self) -> str:  # never print secrets
        kind = "token" if self.token else f"user={self.username!r}"
        return f"Credentials({kind}, secret=***)"


def docker_config_path() -> Path:
    """The Docker config file in force: ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``."""
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _normalise(key: str) -> str:
    for prefix in ("https://", "http://"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key.split("/", 1)[0]


def _helper(name: str, host: str) -> Credentials | None:
    exe = shutil.which(f"docker-credential-{name}")
    if not exe:
        raise AuthError(
            f"the Docker config names credential helper {name!r} but docker-credential-{name} is not on PATH; "
            "install it or put the credentials under 'auths' in the Docker config"
        )
    proc = subprocess.run([exe, "get"], input=host, capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        return None  # the helper has nothing for this host
    data = json.loads(proc.stdout)
    user, secret = data.get("Username", ""), data.get("Secret", "")
    if user == "<token>":
        return Credentials(token=secret)
    return Credentials(username=user, password=secret)


def credentials_from_docker_config(registry: str, path: Path | None = None) -> Credentials | None:
    """Look up credentials for ``registry`` (``host[:port]``) in the Docker config.

    Args:
        registry: the registry host as written in the image reference.
        path: config file to read; default :func:`docker_config_path`.

    Returns:
        The credentials, or ``None`` when the file or an entry for the host is absent.

    Raises:
        AuthError: the file exists but cannot be parsed, or its entry is malformed.
    """
    path = path or docker_config_path()
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AuthError(f"cannot read Docker config {path}: {exc}; fix the JSON or set DOCKER_CONFIG") from exc
    wanted = {registry} | (set(_HUB_KEYS) if registry in _HUB_KEYS else set())
    helper = cfg.get("credHelpers", {}).get(registry)
    if helper:
        return _helper(helper, registry)
    for key, entry in cfg.get("auths", {}).items():
        if _normalise(key) not in wanted and key not in wanted:
            continue
        if entry.get("registrytoken"):
            return Credentials(token=entry["registrytoken"])
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError) as exc:
                raise AuthError(f"the 'auth' entry for {key} in {path} is not base64 'user:password'") from exc
            return Credentials(username=user, password=password)
        if entry.get("username"):
            return Credentials(username=entry["username"], password=entry.get("password", ""))
    if cfg.get("credsStore"):
        return _helper(cfg["credsStore"], registry)
    return None
