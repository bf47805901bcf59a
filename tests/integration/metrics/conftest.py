"""Fixtures: real prometheus_client exporters with the model server's metric names."""

from __future__ import annotations

import pytest

from tests.support.metrics_exporter import Exporter, start_exporter


@pytest.fixture
def exporter():
    exp = start_exporter()
    yield exp
    exp.stop()


@pytest.fixture
def exporter_factory():
    started: list[Exporter] = []

    def make(port: int = 0) -> Exporter:
        exp = start_exporter(port)
        started.append(exp)
        return exp

    yield make
    for exp in started:
        try:
            exp.stop()
        except OSError:
            pass
