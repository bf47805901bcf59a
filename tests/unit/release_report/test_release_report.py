"""The release report page: what it shows, and that a step's text cannot inject markup into it."""

from __future__ import annotations

import re

import pytest

from components.release_report import CanaryInterval, ReleaseFacts, StageLine, render_html


def _facts(**over) -> ReleaseFacts:
    base = dict(
        model_name="llm", run_name="llm-release-1", outcome="rolled_back",
        message="canary p95 latency 0.9s is 3.2x stable <script>alert(1)</script>", wall_s=95.0,
        stages=(StageLine("evaluate", "done", 12.5, "exact match 86.0% vs champion 85.0% · gate passed"),),
        version="3", champion_before="2", champion_after="2",
        lineage={"base model": "bootstrap://tiny", "image digest": "sha256:" + "ab" * 32},
        finetune={"steps": 600.0, "final_loss": 0.38, "wall_s": 60.0, "tokens_per_s": 2000.0},
        loss_curve_html='<html><body><img alt="loss curve" src="data:image/png;base64,iVBORw0KGgo="/></body></html>',
        eval_metrics={"exact_match": 86.0}, champion_metrics={"exact_match": 85.0}, gate_passed=True,
        eval_report_md="# Evaluation report\n\n| metric | candidate |\n|---|---:|\n| exact match (%) | 86.0 |\n",
        image_ref="127.0.0.1:5000/llmops/llm@sha256:" + "ab" * 32, image_size_bytes=13_300_000,
        canary_steps=(50, 100),
        canary=(CanaryInterval(0.0, 4.0, 50, "Successful"), CanaryInterval(4.0, 8.0, 100, "Failed", ("p95 3.2x",))),
        canary_duration_s=10.0,
        rollout_report_md="# Rollout of llm v3\n\n![canary vs stable](rollout.png)\n",
    )
    base.update(over)
    return ReleaseFacts(**base)


def test_the_page_holds_every_steps_figures_and_the_canary_chart():
    page = render_html(_facts())
    assert "rolled back" in page and "v3" in page
    assert 'id="kpi-exact-match">86.0%' in page and "85.0%" in page
    assert '<img id="loss-curve"' in page and "data:image/png;base64," in page
    assert "<table>" in page and "exact match (%)" in page  # the evaluation report's Markdown table
    assert 'id="gate-verdict">passed' in page
    assert "sha256:" + "ab" * 32 in page and "13.3 MB" in page
    svg = re.search(r"<svg.*?</svg>", page, re.S).group(0)
    assert svg.count('class="verdict"') == 2 and "#c62828" in svg  # one dot per verdict, the failure red
    assert 'class="traffic"' in svg
    assert "rollout.png" not in page  # the step's image link would be broken here


def test_text_from_the_steps_is_escaped():
    page = render_html(_facts(eval_report_md="<script>x()</script> **bold**"))
    assert "<script>" not in page
    assert "&lt;script&gt;" in page and "<strong>bold</strong>" in page


def test_a_release_stopped_by_the_gate_says_so_and_has_no_canary():
    page = render_html(_facts(outcome="gate_failed", message="exact match 1.0% vs reference 86.0%", version=None,
                              gate_passed=False, image_ref="", canary=(), rollout_report_md="", finetune={}))
    assert 'id="gate-verdict">FAILED' in page and "gate failed" in page
    assert "Not built" in page and "No canary" in page and "<svg" not in page


def test_an_unknown_outcome_is_refused():
    with pytest.raises(ValueError, match="outcome 'maybe'"):
        render_html(_facts(outcome="maybe"))
