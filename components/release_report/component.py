"""KFP component of the release report: calls :func:`components.release_report.step.release_report_html`."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Markdown, Metrics, Output

from components.images import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def release_report(
    model_name: str,
    run_name: str,
    outcome: str,
    version: str,
    base_model: str,
    dataset: str,
    dataset_sha256: str,
    image_ref: str,
    champion_json: str,
    finetune_metrics: Input[Metrics],
    loss_curve: Input[HTML],
    image_metrics: Input[Metrics],
    eval_metrics: Input[Metrics],
    eval_report: Input[Markdown],
    rollout_report: Input[Markdown],
    rollout_record: Input[Artifact],
    report: Output[HTML],
) -> None:
    """One HTML page of the whole release (the Kubeflow UI shows it under the task's Visualizations)."""
    from pathlib import Path

    from components.release_report.step import release_report_html

    def text(artifact) -> str:
        path = Path(artifact.path)
        return path.read_text(errors="replace") if path.is_file() else ""

    Path(report.path).write_text(release_report_html(
        model_name=model_name, run_name=run_name, outcome=outcome, version=version, base_model=base_model,
        dataset=dataset, dataset_sha256=dataset_sha256, image_ref=image_ref, champion_json=champion_json,
        finetune_metrics=dict(finetune_metrics.metadata), eval_metrics=dict(eval_metrics.metadata),
        image_size_bytes=int(image_metrics.metadata.get("image_size_bytes") or 0) or None,
        loss_curve_html=text(loss_curve), eval_report_md=text(eval_report), rollout_report_md=text(rollout_report),
        rollout_record_json=text(rollout_record),
    ), encoding="utf-8")
