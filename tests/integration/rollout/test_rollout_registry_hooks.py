"""MLflow registry hooks on a real (embedded SQLite) MLflow: the alias names what serves."""

from __future__ import annotations

import shutil
import uuid

import pytest

from serving.isvc import render_isvc
from serving.rollout.controller import RolloutController
from serving.rollout.hooks import MlflowHooks, RegistryHooks
from serving.rollout.report import report_writer
from tests.support.rollout_fakes import NAME, NS, SLOW, FakeKServeBackend, ScriptedMetrics, service, strategy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registry(tmp_path_factory, micro_model):
    """An embedded MLflow store with versions 1 and 2 of one model; v1 is champion."""
    from model_registry.registration import register_model

    uri = f"sqlite:///{(tmp_path_factory.mktemp('mlflow') / 'mlflow.db').as_posix()}"
    name = f"llm-{uuid.uuid4().hex[:8]}"
    v1 = register_model(micro_model, name, tracking_uri=uri, pipeline_run_id="run-1").version
    other = tmp_path_factory.mktemp("v2") / "model"
    shutil.copytree(micro_model, other)
    (other / "notes.txt").write_text("v2")  # a different content digest makes a second version
    v2 = register_model(other, name, tracking_uri=uri, pipeline_run_id="run-2").version
    assert (str(v1), str(v2)) == ("1", "2")
    return uri, name


def _run(ctrl, now=1_000_000.0):
    for _ in range(300):
        out = ctrl.step(now)
        if out.done:
            return out
        now += max(out.next_check_s, 0.1)
    raise AssertionError("did not finish")


def _reset_champion(uri, name, version="1"):
    from model_registry.promotion import promote

    promote(name, version, trigger="manual", reason="test setup", tracking_uri=uri)


def _backend():
    b = FakeKServeBackend()
    b.apply(render_isvc(service("1")))
    return b


def test_mlflow_hooks_implement_the_protocol():
    assert isinstance(MlflowHooks("m"), RegistryHooks)


def test_promotion_moves_champion_with_the_report_link(registry, tmp_path):
    from model_registry.queries import get_champion, history

    uri, name = registry
    _reset_champion(uri, name)
    backend = _backend()
    ctrl = RolloutController(
        backend, service("2"), strategy(), ScriptedMetrics(backend, NAME, NS),
        hooks=MlflowHooks(name, uri), report_writer=report_writer(tmp_path / "report"),
    )
    assert _run(ctrl).result == "promoted"
    assert get_champion(name, uri).version == "2"
    event = history(name, uri)[-1]
    assert event.kind == "promotion" and event.to_version == "2" and event.trigger == "canary"
    # the history links the report attached to the version in MLflow, not a file inside a controller pod
    assert event.report_url.startswith("runs:/") and event.report_url.endswith("rollout.md")
    assert (tmp_path / "report" / "rollout.json").exists()


def test_rollback_keeps_champion_and_records_the_reason(registry):
    from model_registry.queries import get_champion, history

    uri, name = registry
    _reset_champion(uri, name)
    backend = _backend()
    metrics = ScriptedMetrics(backend, NAME, NS, {"2": SLOW})
    ctrl = RolloutController(backend, service("2"), strategy(), metrics, hooks=MlflowHooks(name, uri))
    assert _run(ctrl).result == "rolled_back"
    assert get_champion(name, uri).version == "1"
    event = history(name, uri)[-1]
    assert event.kind == "rollback" and "latency" in event.reason
    assert event.report["outcome"] == "rolled_back" and event.report["intervals"][0]["phase"] == "Failed"
    # every verdict's evidence is an artifact of the version a user can open
    import json

    import mlflow
    from model_registry.client import connect
    from serving.rollout.hooks import REPORT_TAG

    mv = connect(uri).client.get_model_version(name, "2")
    link = mv.tags[REPORT_TAG]
    assert link.startswith(f"runs:/{mv.run_id}/rollouts/") and event.report_url == link
    mlflow.set_tracking_uri(uri)
    report = json.loads(mlflow.artifacts.load_text(link.replace("rollout.md", "rollout.json")))
    failed = next(r for r in report["intervals"] if r["phase"] == "Failed")
    check = next(c for c in failed["checks"] if c["phase"] == "Failed")
    assert check["details"]["e_value"] >= check["details"]["e_threshold"]
    md = mlflow.artifacts.load_text(link)
    assert "## Evidence" in md and check["name"] in md


def test_bake_window_rollback_moves_champion_back(registry):
    from model_registry.queries import get_champion

    uri, name = registry
    _reset_champion(uri, name)
    backend = _backend()
    metrics = ScriptedMetrics(backend, NAME, NS)
    ctrl = RolloutController(backend, service("2"), strategy(bake_s=30), metrics, hooks=MlflowHooks(name, uri))
    now = 1_000_000.0
    while get_champion(name, uri).version != "2":
        now += max(ctrl.step(now).next_check_s, 0.1)
    metrics.profiles["2"] = SLOW
    assert _run(ctrl, now).result == "rolled_back"
    assert get_champion(name, uri).version == "1"
