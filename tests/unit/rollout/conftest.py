"""Fixtures for the rollout controller's unit tests (fakes implement the real interfaces)."""

from __future__ import annotations

import pytest

from serving.isvc import render_isvc
from tests.support.rollout_fakes import NAME, NS, FakeKServeBackend, RecordingHooks, ScriptedMetrics, service


@pytest.fixture
def backend() -> FakeKServeBackend:
    b = FakeKServeBackend()
    b.apply(render_isvc(service("1")))
    return b


@pytest.fixture
def hooks() -> RecordingHooks:
    return RecordingHooks()


@pytest.fixture
def metrics(backend) -> ScriptedMetrics:
    return ScriptedMetrics(backend, NAME, NS)
