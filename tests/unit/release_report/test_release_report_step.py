"""The Kubeflow release-report step: the other steps' outputs in, one HTML page of the release out."""

from __future__ import annotations

import json

from components.release_report import canary_from_report
from components.release_report.step import release_report_html
from serving.rollout.report import build_report
from serving.rollout.state import RolloutPhase, RolloutState
from serving.rollout.strategy import RolloutStrategy


def _record(phase: RolloutPhase, reason: str) -> dict:
    t0 = 1_700_000_000.0
    state = RolloutState(
        rollout_id="r1", target_version="3", previous_version="2", mode="Serverless", phase=phase, steps=(10, 50, 100), step_index=1,
        started=t0, finished=t0 + 130, reason=reason,
        intervals=({"start": t0 + 10, "end": t0 + 70, "weight": 10, "phase": "Successful", "reasons": []},
                   {"start": t0 + 70, "end": t0 + 130, "weight": 50, "phase": "Failed",
                    "reasons": ["latency p95 0.9s vs 0.2s"]}),
    )
    return build_report("llm", "llmops", state, RolloutStrategy(steps=(10, 50, 100)))


def _page(outcome: str, record: dict) -> str:
    return release_report_html(
        model_name="llm", run_name="llm-release-abc", outcome=outcome, version="3", base_model="hf://org/base@main",
        dataset="s3://data/tasks", dataset_sha256="ab" * 32, image_ref="registry/llm@sha256:" + "cd" * 32,
        champion_json=json.dumps({"version": "2", "exact_match": 61.0}),
        finetune_metrics={"final_loss": 0.42, "steps": 600}, eval_metrics={"exact_match": 64.5, "perplexity": 3.1},
        loss_curve_html='<img id="loss-curve" src="data:image/png;base64,AA==">',
        eval_report_md="# Evaluation\n\ngate passed", rollout_report_md="# Rollout of llm v3\n\nrolled back",
        rollout_record_json=json.dumps(record), image_size_bytes=3_400_000,
    )


def test_the_timeline_comes_from_the_rollout_record():
    rows, steps, duration = canary_from_report(_record(RolloutPhase.ROLLED_BACK, "latency"))
    assert [(r.start_s, r.end_s, r.weight, r.verdict) for r in rows] == [(10, 70, 10, "Successful"), (70, 130, 50, "Failed")]
    assert steps == (10, 50, 100) and duration == 130


def test_a_rolled_back_release_page_names_the_evidence_lineage_and_champion():
    page = _page("rolled_back", _record(RolloutPhase.ROLLED_BACK, "Failed at 50%: latency p95 0.9s vs 0.2s"))
    assert "rolled back" in page and "Failed at 50%: latency p95 0.9s vs 0.2s" in page
    assert 'class="canary-chart"' in page and "#c62828" in page  # the failed interval, in red
    for value in ("hf://org/base@main", "s3://data/tasks", "ab" * 32, "registry/llm@sha256:" + "cd" * 32, "llm v3"):
        assert value in page, value
    assert 'id="kpi-exact-match">64.5%' in page and 'id="loss-curve"' in page
    assert "champion after<b>v2</b>" in page  # a rollback leaves the champion where it was
    assert "3.4 MB" in page  # the image size from the build step's metrics


def test_a_promoted_release_moves_the_champion_and_a_missing_record_still_renders():
    page = _page("promoted", _record(RolloutPhase.PROMOTED, "promoted at 100%"))
    assert "champion after<b>v3</b>" in page
    bare = _page("promoted", {})
    assert "promoted" in bare and "<html" in bare
