"""Units of :mod:`pipelines.promote`: refusing bad targets, the Standard-mode plan, the summary."""

from __future__ import annotations

import pytest

from pipelines import promote as lib
from serving.isvc import render_isvc
from serving.rollout.runner import RolloutResult
from tests.support.rollout_fakes import FakeKServeBackend, strategy

IMG1 = "r.example.com/llm@sha256:" + "1" * 64
IMG2 = "r.example.com/llm@sha256:" + "2" * 64


@pytest.mark.parametrize(("version", "alias", "expected"), [("3", None, "3"), (None, "challenger", "@challenger"), (None, "@champion", "@champion")])
def test_version_ref(version, alias, expected):
    assert lib.version_ref(version, alias) == expected


@pytest.mark.parametrize(("version", "alias", "message"), [("3", "challenger", "not both"), (None, None, "none was given")])
def test_version_ref_needs_exactly_one(version, alias, message):
    with pytest.raises(lib.TargetError, match=f"give exactly one of --version N or --alias NAME.*{message}"):
        lib.version_ref(version, alias)


def test_image_without_digest_is_refused():
    with pytest.raises(lib.NoImageError, match="not pinned by digest.*`llmops build-image`"):
        lib.PromoteTarget("m", "2", "r.example.com/llm:latest").validate()
    assert lib.PromoteTarget("m", "2", IMG2).validate().storage_uri == "oci://" + IMG2
    assert lib.PromoteTarget("m", "2", "oci://" + IMG2).storage_uri == "oci://" + IMG2


def test_standard_mode_plan_adds_a_canary_entry_and_keeps_the_stable_predictor():
    backend = FakeKServeBackend()
    backend.apply(render_isvc(lib.service_spec(lib.PromoteTarget("m", "1", IMG1), "llm", "models", deployment_mode="Standard")))
    rv = backend.get("llm", "models")["metadata"]["resourceVersion"]
    spec = lib.service_spec(lib.PromoteTarget("m", "2", IMG2), "llm", "models", deployment_mode="Standard")
    change = lib.plan_change(backend, spec, strategy(steps=(5, 100)))
    assert not change.creates
    assert change.proposed["spec"]["canary"][0]["trafficPercent"] == 5
    assert change.proposed["spec"]["canary"][0]["predictor"]["model"]["storageUri"] == "oci://" + IMG2
    assert change.proposed["spec"]["predictor"] == change.current["spec"]["predictor"]
    assert "+    trafficPercent: 5" in change.diff and not any(ln.startswith("-") and not ln.startswith("---") for ln in change.diff.splitlines())
    assert backend.get("llm", "models")["metadata"]["resourceVersion"] == rv and len(backend.writes) == 1


def test_summary_block_and_markdown():
    target = lib.PromoteTarget("m", "2", IMG2)
    spec = lib.service_spec(target, "llm", "models")
    result = RolloutResult(outcome="rolled_back", reason="latency p95 | 1.9x stable", report={"steps": [10, 100], "step_reached": 10})
    rows = lib.summary_lines(target, spec, result)
    text = lib.summary_text(rows)
    assert text.splitlines()[0] == "=" * 60 and "outcome   : ROLLED BACK" in text and "exit code : 1" in text
    assert "steps     : 10%, 100%; reached 10%" in text
    md = lib.summary_markdown(rows)
    assert md.startswith("### llmops promote: ROLLED BACK\n")
    assert "| reason | latency p95 \\| 1.9x stable |" in md
