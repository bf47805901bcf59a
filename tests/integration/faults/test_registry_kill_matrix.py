"""Crash-resume matrix of the registry side effects a rollout has (promotion, rollback, alias moves).

For every named kill point inside :func:`model_registry.promote` and
:func:`model_registry.record_rollback`, the hook the rollout controller calls
runs in a real process that SIGKILLs itself there (``LLMOPS_KILL_AT``), with
its promotion lock held; the controller's rerun then calls the same hook again
with the same rollout id. Each rerun must converge at once (no lease wait):
the champion alias names what serves, the history holds exactly one event of
that rollout, and no lock is left.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest
from mlflow import MlflowClient

from model_registry import get_champion, history, promote, register_model, resolve
from serving.rollout.hooks import MlflowHooks, RolloutEvent

pytestmark = pytest.mark.integration

ROLLOUT = "r-0002"
# (scenario, kill point, hook, champion after, event kind)
MATRIX = [
    ("healthy", "registry.promote.locked", "promoted", "2", "promotion"),
    ("healthy", "registry.promote.previous_moved", "promoted", "2", "promotion"),
    ("healthy", "registry.promote.champion_moved", "promoted", "2", "promotion"),
    ("healthy", "registry.promote.event_written", "promoted", "2", "promotion"),
    ("regressed", "registry.rollback.locked", "rolled_back", "1", "rollback"),
    ("regressed", "registry.rollback.event_written", "rolled_back", "1", "rollback"),
    ("bake-regressed", "registry.rollback.locked", "rolled_back", "1", "rollback"),
    ("bake-regressed", "registry.rollback.champion_moved", "rolled_back", "1", "rollback"),
    ("bake-regressed", "registry.rollback.event_written", "rolled_back", "1", "rollback"),
]


def _event(version: str) -> RolloutEvent:
    return RolloutEvent(service="llm", namespace="default", version=version, previous_version="1",
                        reason="p95 latency 3.1x the stable revision" if version else "", rollout_id=ROLLOUT)


def _call_hook(uri, name, hook, point):
    os.environ["LLMOPS_KILL_AT"] = point
    getattr(MlflowHooks(name, uri), hook)(_event("2"))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    home = tmp_path_factory.mktemp("matrix")
    return f"sqlite:///{home.as_posix()}/mlflow.db"


@pytest.mark.parametrize("scenario,point,hook,champion,kind", MATRIX, ids=[f"{m[0]}-{m[1].split('.', 1)[1]}" for m in MATRIX])
def test_every_kill_point_converges_on_the_rerun(store, micro_model, scenario, point, hook, champion, kind, monkeypatch):
    monkeypatch.delenv("LLMOPS_KILL_AT", raising=False)
    name = f"llm-{scenario}-{point.rsplit('.', 1)[1]}".replace("_", "-")
    for run in ("a", "b"):
        register_model(micro_model, name, pipeline_run_id=run, tracking_uri=store)
    promote(name, "1", trigger="manual", tracking_uri=store)
    if scenario == "bake-regressed":  # promoted, then a bake-window regression rolls it back
        promote(name, "2", trigger="canary", rollout_id=ROLLOUT, tracking_uri=store)

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["mlflow", "model_registry", "serving.rollout.hooks"])
    proc = ctx.Process(target=_call_hook, args=(store, name, hook, point))
    proc.start()
    proc.join(timeout=120)
    assert proc.exitcode == -signal.SIGKILL, f"never reached {point}"

    started = time.monotonic()
    getattr(MlflowHooks(name, store), hook)(_event("2"))  # the controller's rerun: hooks_pending still set
    assert time.monotonic() - started < 20  # its own leftover lock is taken over at once

    assert get_champion(name, tracking_uri=store).version == champion
    mine = [e for e in history(name, tracking_uri=store) if e.kind == kind and e.rollout_id == ROLLOUT]
    assert len(mine) == 1, mine
    if kind == "promotion":
        assert resolve(name, "previous-champion", tracking_uri=store).version == "1"
    client = MlflowClient(store, registry_uri=store)
    assert [m.name for m in client.search_registered_models(f"name LIKE 'llmops-lock-{name}%'")] == []
