"""The release report as a pipeline step: the steps' own outputs in, one HTML page out.

On Kubeflow the run's last task calls :func:`release_report_html` with what the
other tasks produced (their metrics, the loss curve, the evaluation and rollout
reports, the rollout's JSON record) and writes the page as an ``HTML`` artifact,
which the Kubeflow UI shows in the task's Visualizations. The embedded run
(``llmops run``) writes the same page from its own folders
(``pipelines.local_run.write_release_report``), with the stage table added.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from components.release_report.report import ReleaseFacts, canary_from_report, render_html


def _json(text: str) -> dict:
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def release_report_html(
    *,
    model_name: str,
    run_name: str,
    outcome: str,
    version: str,
    base_model: str,
    dataset: str,
    dataset_sha256: str,
    image_ref: str,
    champion_json: str,
    finetune_metrics: Mapping[str, Any],
    eval_metrics: Mapping[str, Any],
    loss_curve_html: str,
    eval_report_md: str,
    rollout_report_md: str,
    rollout_record_json: str,
    image_size_bytes: int | None = None,
) -> str:
    """One self-contained HTML page of the release (see :mod:`components.release_report.report`).

    ``outcome`` is the rollout step's output (promoted or rolled_back); the champion after
    the run is this version when promoted, else the one before.
    """
    record = _json(rollout_record_json)
    champion = _json(champion_json)
    before = str(champion.get("version")) if champion.get("version") else None
    canary, steps, duration = canary_from_report(record)
    lineage = {"base model": base_model, "dataset": dataset}
    if dataset_sha256:
        lineage["dataset sha256"] = dataset_sha256
    if version:
        lineage["registered version"] = f"{model_name} v{version}"
    if image_ref:
        lineage["image"] = image_ref
    facts = ReleaseFacts(
        model_name=model_name,
        run_name=run_name,
        outcome=outcome if outcome in ("promoted", "rolled_back") else "error",
        message=str(record.get("reason") or outcome),
        wall_s=None,
        version=version or None,
        champion_before=before,
        champion_after=version if outcome == "promoted" else before,
        lineage=lineage,
        finetune={k: v for k, v in finetune_metrics.items() if isinstance(v, (int, float))},
        loss_curve_html=loss_curve_html,
        eval_metrics={k: v for k, v in eval_metrics.items() if isinstance(v, (int, float))},
        champion_metrics={k: v for k, v in champion.items() if isinstance(v, (int, float))},
        gate_passed=True,  # this step runs in the pipeline's "gate passed" branch
        eval_report_md=eval_report_md,
        image_ref=image_ref,
        image_size_bytes=image_size_bytes,
        canary_steps=steps,
        canary=canary,
        canary_duration_s=duration,
        rollout_report_md=rollout_report_md,
    )
    return render_html(facts)
