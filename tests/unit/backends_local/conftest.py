"""Fixtures for the local backend's unit tests: a tiny test-only server command and clean-up."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from serving.backends.local import LocalBackend
from serving.isvc import PredictorSpec, ServiceSpec, render_isvc

FAKE_SERVER = [sys.executable, str(Path(__file__).with_name("fake_server.py"))]


def make_model(path: Path) -> Path:
    """A folder the fake server accepts (it only checks config.json parses)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    return path


def isvc(name: str, model: Path, version: str, canary: int | None = None, args: tuple[str, ...] = ()) -> dict:
    spec = ServiceSpec(name=name, predictor=PredictorSpec(storage_uri=str(model), model_version=version, args=args))
    return render_isvc(spec, canary)


@pytest.fixture
def backends(tmp_path):
    """Factory of LocalBackend objects on one state folder; stops everything afterwards."""
    made: list[LocalBackend] = []

    def make(**kw) -> LocalBackend:
        kw.setdefault("server_command", FAKE_SERVER)
        kw.setdefault("stop_timeout_s", 5.0)
        b = LocalBackend(tmp_path / "state", **kw)
        made.append(b)
        return b

    yield make
    if made:
        b = made[0]
        for ns, name in b.services():
            b.delete(name, ns)
