"""Races and leftovers against a real ``mlflow server``: one version, one champion, each event once.

Eight real processes (a forkserver preloaded with mlflow, so each starts in
milliseconds with its own HTTP session) hit the server at the same moment.
"""

from __future__ import annotations

import multiprocessing
import time

import pytest
from mlflow import MlflowClient

from model_registry import PromotionConflict, PromotionEvent, get_champion, history, promote, record_rollback, register_model
from model_registry.types import DIGEST_TAG

pytestmark = pytest.mark.integration

N = 8


def _ctx():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["mlflow", "model_registry", "model_registry.registration", "model_registry.promotion"])
    return ctx


def _register(uri, name, folder, run_id, barrier, out):
    barrier.wait()
    try:
        rv = register_model(folder, name, pipeline_run_id=run_id, tracking_uri=uri)
        out.put(("ok", rv.version, rv.created))
    except Exception as exc:  # reported to the test
        out.put(("error", type(exc).__name__, str(exc)))


def _promote(uri, name, version, barrier, out):
    barrier.wait()
    try:
        ev = promote(name, version, trigger="race", expected_champion=None, tracking_uri=uri)
        out.put(("ok", ev.event_id, ev.to_version))
    except PromotionConflict as exc:
        out.put(("conflict", str(exc), None))
    except Exception as exc:
        out.put(("error", type(exc).__name__, str(exc)))


def _run_all(target, argsets):
    ctx = _ctx()
    barrier, out = ctx.Barrier(len(argsets)), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, barrier, out)) for a in argsets]
    for p in procs:
        p.start()
    results = [out.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    return results


def _lock_models(uri, name):
    client = MlflowClient(uri, registry_uri=uri)
    return [rm.name for rm in client.search_registered_models(f"name LIKE 'llmops-lock-{name}%'")]


@pytest.mark.parametrize("run_id", ["run-42", None], ids=["same-run-id", "no-run-id"])
def test_concurrent_registrations_of_one_content_make_one_version(mlflow_server, model_name, micro_model, run_id):
    uri = mlflow_server.uri
    results = _run_all(_register, [(uri, model_name, str(micro_model), run_id)] * N)
    assert all(r[0] == "ok" for r in results), results
    assert len({r[1] for r in results}) == 1, results  # everyone got the same version back
    assert sum(1 for r in results if r[2]) == 1, results  # exactly one created it
    versions = MlflowClient(uri, registry_uri=uri).search_model_versions(f"name = '{model_name}'")
    assert len(versions) == 1 and versions[0].tags[DIGEST_TAG].startswith("sha256:")
    assert _lock_models(uri, model_name) == []  # every claim released


def test_concurrent_promotions_give_one_champion_and_one_event(mlflow_server, model_name, micro_model, tmp_path):
    uri = mlflow_server.uri
    v1 = register_model(micro_model, model_name, pipeline_run_id="a", tracking_uri=uri).version
    v2 = register_model(micro_model, model_name, pipeline_run_id="b", tracking_uri=uri).version
    results = _run_all(_promote, [(uri, model_name, v) for v in [v1, v2] * (N // 2)])
    assert not [r for r in results if r[0] == "error"], results
    winners = {(r[1], r[2]) for r in results if r[0] == "ok"}
    assert len(winners) == 1, results  # whoever did not win got a conflict, or the winner's own event back
    (event_id, champion), = winners
    assert get_champion(model_name, tracking_uri=uri).version == champion
    promotions = [e for e in history(model_name, tracking_uri=uri) if e.kind == "promotion"]
    assert [e.event_id for e in promotions] == [event_id]
    assert _lock_models(uri, model_name) == []


def test_a_rerun_of_the_same_rollout_takes_its_leftover_lock_at_once(mlflow_server, model_name, micro_model):
    from model_registry.client import connect
    from model_registry.promotion import PromotionLock, lock_owner

    uri = mlflow_server.uri
    v1 = register_model(micro_model, model_name, pipeline_run_id="a", tracking_uri=uri).version
    conn = connect(uri)
    PromotionLock(conn, model_name, ttl_s=600, owner=lock_owner("r-crashed")).acquire()  # its controller was SIGKILLed
    with pytest.raises(PromotionConflict, match=r"held by rollout:r-crashed"):
        promote(model_name, v1, trigger="canary", rollout_id="someone-else", tracking_uri=uri)
    started = time.monotonic()
    event = promote(model_name, v1, trigger="canary", rollout_id="r-crashed", tracking_uri=uri)
    assert time.monotonic() - started < 10  # not the lease (600 s)
    assert event.rollout_id == "r-crashed" and get_champion(model_name, tracking_uri=uri).version == v1
    again = promote(model_name, v1, trigger="canary", rollout_id="r-crashed", tracking_uri=uri)
    assert again.event_id == event.event_id
    assert _lock_models(uri, model_name) == []


def test_a_rollback_rerun_is_recorded_once(mlflow_server, model_name, micro_model):
    uri = mlflow_server.uri
    v1 = register_model(micro_model, model_name, pipeline_run_id="a", tracking_uri=uri).version
    v2 = register_model(micro_model, model_name, pipeline_run_id="b", tracking_uri=uri).version
    promote(model_name, v1, trigger="manual", tracking_uri=uri)
    first = record_rollback(model_name, v2, reason="p95 latency regressed", rollout_id="r-7", tracking_uri=uri)
    # the controller died before clearing hooks_pending: its rerun calls the hook again
    second = record_rollback(model_name, v2, reason="p95 latency regressed", rollout_id="r-7", tracking_uri=uri)
    assert second.event_id == first.event_id
    rollbacks = [e for e in history(model_name, tracking_uri=uri) if e.kind == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0].rollout_id == "r-7"
    assert get_champion(model_name, tracking_uri=uri).version == v1


def test_a_dead_tracking_server_fails_in_seconds_naming_it_without_the_password(micro_model, model_name, monkeypatch):
    from model_registry import RegistryUnavailable
    from tests.support.mlflow_server import free_port

    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(key, raising=False)
    port = free_port()
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable) as info:
        register_model(micro_model, model_name, tracking_uri=f"http://ops:s3cr3t-pa55@127.0.0.1:{port}")
    assert time.monotonic() - started < 15
    assert f"127.0.0.1:{port}" in str(info.value) and "s3cr3t-pa55" not in str(info.value)
    assert "start the server" in str(info.value)
