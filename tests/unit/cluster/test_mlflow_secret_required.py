"""A pipeline step in a pod without the MLflow Secret fails loudly (issue 12 defect 4).

Without it each step would use an embedded store inside its own pod: the champion step
would always report a first release and registrations would vanish with the pod.
"""

from __future__ import annotations

import pytest

from components.champion.component import champion_metrics
from components.tracking import MissingTrackingUri, step_tracking_uri
from serving.cluster import names


@pytest.fixture
def in_pod(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(names.IN_CLUSTER_ENV, "10.0.0.1")
    monkeypatch.delenv(names.MLFLOW_URI_KEY, raising=False)


def test_champion_step_in_a_pod_without_the_secret_stops_and_names_it(in_pod, tmp_path):
    with pytest.raises(MissingTrackingUri, match=f"create Secret '{names.MLFLOW_SECRET}' with key {names.MLFLOW_URI_KEY}"):
        champion_metrics.python_func(model_name="llm", tracking_uri="")
    assert not list(tmp_path.rglob("*.db")), "no embedded store was created inside the pod"


def test_the_secrets_uri_or_the_parameter_is_used(in_pod, monkeypatch):
    assert step_tracking_uri("http://mlflow:5000") == "http://mlflow:5000"
    monkeypatch.setenv(names.MLFLOW_URI_KEY, "http://mlflow.llmops:5000")
    assert step_tracking_uri("") == "http://mlflow.llmops:5000"


def test_on_one_machine_the_embedded_store_stays_the_default(monkeypatch):
    monkeypatch.delenv(names.IN_CLUSTER_ENV, raising=False)
    monkeypatch.delenv(names.MLFLOW_URI_KEY, raising=False)
    assert step_tracking_uri("") is None
