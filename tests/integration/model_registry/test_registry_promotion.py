"""Aliases, promotion history, rollback and the promotion race, on a real registry."""

from __future__ import annotations

import threading
import time

import pytest

from model_registry import (
    ANY,
    PromotionConflict,
    PromotionEvent,
    RegistryError,
    get_champion,
    get_lineage,
    history,
    promote,
    record_rollback,
    register_model,
    resolve,
    set_challenger,
)

pytestmark = pytest.mark.integration


def _three_versions(uri, name, micro_model):
    versions = []
    for i in range(3):
        reg = register_model(
            micro_model, name, metrics={"exact_match": 0.5 + i / 10}, pipeline_run_id=f"run-{i}", tracking_uri=uri
        )
        versions.append(reg.version)
    return versions


def test_promotion_moves_aliases_and_records_history(registry_uri, model_name, micro_model):
    v1, v2, _ = _three_versions(registry_uri, model_name, micro_model)
    first = promote(model_name, v1, trigger="manual", reason="first release", expected_champion=None, tracking_uri=registry_uri)
    assert isinstance(first, PromotionEvent)
    assert (first.from_version, first.to_version) == (None, v1)

    set_challenger(model_name, v2, tracking_uri=registry_uri)
    second = promote(
        model_name,
        v2,
        trigger="pipeline",
        reason="canary passed",
        report_url="file:///reports/rollout.html",
        expected_champion=v1,
        tracking_uri=registry_uri,
    )
    assert (second.from_version, second.to_version) == (v1, v2)

    champ = get_champion(model_name, tracking_uri=registry_uri)
    assert champ.version == v2
    assert champ.model_uri == f"models:/{model_name}/{v2}"
    assert champ.metrics == {"exact_match": pytest.approx(0.6)}
    assert champ.digest and champ.digest.startswith("sha256:")
    assert resolve(model_name, "previous-champion", tracking_uri=registry_uri).version == v1
    with pytest.raises(RegistryError, match="no version or alias 'challenger'"):
        resolve(model_name, "challenger", tracking_uri=registry_uri)  # cleared by the promotion

    events = history(model_name, tracking_uri=registry_uri)
    assert [(e.kind, e.from_version, e.to_version, e.trigger) for e in events] == [
        ("promotion", None, v1, "manual"),
        ("promotion", v1, v2, "pipeline"),
    ]
    assert events[1].reason == "canary passed" and events[1].report_url == "file:///reports/rollout.html"
    assert events[0].time < events[1].time
    assert get_lineage(model_name, v2, tracking_uri=registry_uri)["promoted_at"] == second.time

    # An idempotent retry of the finished promotion returns the same event, records nothing new.
    again = promote(model_name, v2, trigger="pipeline", expected_champion=v1, tracking_uri=registry_uri)
    assert again == events[1]
    assert len(history(model_name, tracking_uri=registry_uri)) == 2


def test_stale_expected_champion_is_a_conflict(registry_uri, model_name, micro_model):
    v1, v2, v3 = _three_versions(registry_uri, model_name, micro_model)
    promote(model_name, v1, trigger="manual", tracking_uri=registry_uri)
    promote(model_name, v2, trigger="manual", expected_champion=v1, tracking_uri=registry_uri)
    with pytest.raises(PromotionConflict, match=rf"champion is version {v2}, expected version {v1}; another promotion won"):
        promote(model_name, v3, trigger="pipeline", expected_champion=v1, tracking_uri=registry_uri)
    with pytest.raises(PromotionConflict, match="expected no champion"):
        promote(model_name, v3, trigger="pipeline", expected_champion=None, tracking_uri=registry_uri)
    assert get_champion(model_name, tracking_uri=registry_uri).version == v2


def test_rollback_of_a_canary_keeps_the_champion(registry_uri, model_name, micro_model):
    v1, v2, _ = _three_versions(registry_uri, model_name, micro_model)
    promote(model_name, v1, trigger="manual", tracking_uri=registry_uri)
    set_challenger(model_name, v2, tracking_uri=registry_uri)
    event = record_rollback(
        model_name,
        v2,
        reason="p95 latency +80% at 20% traffic",
        report_url="file:///reports/r.html",
        report={"step": 2, "checks": {"latency_p95": "FAILED"}},
        tracking_uri=registry_uri,
    )
    assert (event.kind, event.from_version, event.to_version) == ("rollback", v2, v1)
    assert get_champion(model_name, tracking_uri=registry_uri).version == v1
    stored = history(model_name, tracking_uri=registry_uri)[-1]
    assert stored.report == {"step": 2, "checks": {"latency_p95": "FAILED"}}
    assert stored.reason == "p95 latency +80% at 20% traffic"
    lineage = get_lineage(model_name, v2, tracking_uri=registry_uri)
    assert lineage["rollout_outcome"] == "rolled_back"
    assert "challenger" not in lineage["aliases"]


def test_rollback_of_the_champion_restores_the_previous_one(registry_uri, model_name, micro_model):
    v1, v2, v3 = _three_versions(registry_uri, model_name, micro_model)
    promote(model_name, v1, trigger="manual", tracking_uri=registry_uri)
    promote(model_name, v2, trigger="manual", tracking_uri=registry_uri)
    promote(model_name, v3, trigger="manual", tracking_uri=registry_uri)
    event = record_rollback(model_name, v3, reason="error rate after promotion", tracking_uri=registry_uri)
    assert (event.from_version, event.to_version) == (v3, v2)
    assert get_champion(model_name, tracking_uri=registry_uri).version == v2
    assert resolve(model_name, "previous-champion", tracking_uri=registry_uri).version == v1
    record_rollback(model_name, v2, reason="again", tracking_uri=registry_uri)
    assert get_champion(model_name, tracking_uri=registry_uri).version == v1
    with pytest.raises(RegistryError, match=rf"cannot roll back '{model_name}' version {v1}: .*no previous champion"):
        record_rollback(model_name, v1, reason="nothing to return to", tracking_uri=registry_uri)
    assert get_champion(model_name, tracking_uri=registry_uri).version == v1
    assert [e.kind for e in history(model_name, tracking_uri=registry_uri)] == ["promotion"] * 3 + ["rollback"] * 2


def test_rollback_of_a_respec_of_the_champion_keeps_it_champion(registry_uri, model_name, micro_model):
    """A re-roll of the serving version with a new spec that regresses: the version still serves (old spec)."""
    v1, v2, _ = _three_versions(registry_uri, model_name, micro_model)
    promote(model_name, v1, trigger="manual", tracking_uri=registry_uri)
    promote(model_name, v2, trigger="manual", tracking_uri=registry_uri)
    event = record_rollback(model_name, v2, reason="p95 x3 on the new runtime args", tracking_uri=registry_uri,
                            same_version_serves=True)
    assert (event.kind, event.from_version, event.to_version) == ("rollback", v2, v2)
    assert get_champion(model_name, tracking_uri=registry_uri).version == v2
    assert resolve(model_name, "previous-champion", tracking_uri=registry_uri).version == v1
    assert get_lineage(model_name, v2, tracking_uri=registry_uri)["rollout_outcome"] == "respec_rolled_back"


def test_refusals_name_the_fix(registry_uri, model_name, micro_model):
    (v1, *_rest) = _three_versions(registry_uri, model_name, micro_model)
    with pytest.raises(ValueError, match="needs a trigger"):
        promote(model_name, v1, trigger=" ", tracking_uri=registry_uri)
    with pytest.raises(ValueError, match="needs a reason"):
        record_rollback(model_name, v1, reason="", tracking_uri=registry_uri)


def _race(uri, name, contenders, expected):
    barrier = threading.Barrier(len(contenders))
    results: dict[str, object] = {}

    def run(version):
        barrier.wait()
        try:
            results[version] = promote(name, version, trigger="race", expected_champion=expected, tracking_uri=uri)
        except Exception as exc:  # collected and asserted below
            results[version] = exc

    threads = [threading.Thread(target=run, args=(v,)) for v in contenders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


@pytest.mark.parametrize("rounds", [3])
def test_promotion_race_has_exactly_one_winner(mlflow_server, model_name, micro_model, rounds):
    uri = mlflow_server.uri
    versions = _three_versions(uri, model_name, micro_model)
    register_model(micro_model, model_name, pipeline_run_id="run-3", tracking_uri=uri)
    promote(model_name, "1", trigger="manual", tracking_uri=uri)
    champion = "1"
    contenders = ["2", "3", "4"]
    for _ in range(rounds):
        results = _race(uri, model_name, [v for v in contenders if v != champion], expected=champion)
        winners = [v for v, r in results.items() if isinstance(r, PromotionEvent)]
        losers = [r for r in results.values() if not isinstance(r, PromotionEvent)]
        assert len(winners) == 1, results
        assert all(isinstance(r, PromotionConflict) for r in losers), results
        assert all(
            "another promotion of" in str(r) or "another promotion won the race" in str(r) for r in losers
        ), results
        assert get_champion(model_name, tracking_uri=uri).version == winners[0]
        assert resolve(model_name, "previous-champion", tracking_uri=uri).version == champion
        champion = winners[0]
    promotions = [e for e in history(model_name, tracking_uri=uri) if e.trigger == "race"]
    assert len(promotions) == rounds
    assert versions  # registered above


def test_promotion_race_on_the_embedded_store(embedded_uri, model_name, micro_model):
    _three_versions(embedded_uri, model_name, micro_model)
    promote(model_name, "1", trigger="manual", tracking_uri=embedded_uri)
    results = _race(embedded_uri, model_name, ["2", "3"], expected="1")
    winners = [v for v, r in results.items() if isinstance(r, PromotionEvent)]
    assert len(winners) == 1, results
    assert all(isinstance(r, PromotionConflict) for v, r in results.items() if v not in winners), results
    assert get_champion(model_name, tracking_uri=embedded_uri).version == winners[0]


def test_a_crashed_holders_lock_is_taken_over_after_expiry(mlflow_server, model_name, micro_model):
    from model_registry.client import connect
    from model_registry.promotion import PromotionLock

    uri = mlflow_server.uri
    v1, v2, _ = _three_versions(uri, model_name, micro_model)
    conn = connect(uri)
    crashed = PromotionLock(conn, model_name, ttl_s=60, clock=lambda: time.time() - 3600, owner="crashed-host:1")
    crashed.acquire()  # never released: its holder "crashed" an hour ago
    fresh = PromotionLock(conn, model_name, ttl_s=600, owner="live-host:2")
    fresh.acquire()  # live lock held by someone else right now
    with pytest.raises(PromotionConflict, match=r"lock 'llmops-lock-.*' held by live-host:2 .*delete registered model"):
        promote(model_name, v1, trigger="manual", expected_champion=ANY, tracking_uri=uri)
    fresh.release()
    crashed_again = PromotionLock(conn, model_name, ttl_s=60, clock=lambda: time.time() - 3600, owner="crashed-host:1")
    crashed_again.acquire()
    event = promote(model_name, v1, trigger="manual", tracking_uri=uri)  # expired: taken over
    assert event.to_version == v1
    from mlflow import MlflowClient

    names = [rm.name for rm in MlflowClient(uri, registry_uri=uri).search_registered_models(f"name LIKE 'llmops-lock-{model_name}%'")]
    assert names == []  # released, and the stale tombstone was removed
    assert v2
