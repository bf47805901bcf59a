"""Fixtures for the registry integration tests: a real ``mlflow server`` and an embedded SQLite store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.mlflow_server import MlflowServer, run_mlflow_server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[MlflowServer]:
    """One ``mlflow server`` (SQLite + proxied artifacts) shared by the session; tests use unique model names."""
    with run_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


@pytest.fixture(scope="session")
def embedded_uri(tmp_path_factory) -> str:
    """The embedded default store (what ``default_tracking_uri`` builds), under a temp folder."""
    home = tmp_path_factory.mktemp("embedded") / ".llmops" / "mlflow"
    return f"sqlite:///{home.as_posix()}/mlflow.db"


@pytest.fixture(params=["server", "embedded"])
def registry_uri(request) -> str:
    """Each test runs against the real server over HTTP and against the embedded SQLite store."""
    if request.param == "server":
        return request.getfixturevalue("mlflow_server").uri
    return request.getfixturevalue("embedded_uri")


@pytest.fixture
def model_name() -> str:
    return f"llm-{uuid.uuid4().hex[:10]}"


@pytest.fixture(autouse=True)
def _no_ambient_tracking_uri(monkeypatch):
    """Tests pass tracking URIs explicitly; an ambient MLFLOW_TRACKING_URI must not leak in."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
