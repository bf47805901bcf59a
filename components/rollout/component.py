"""KFP component of the rollout step: calls :func:`components.rollout.step.run_rollout_step` and nothing else."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Metrics, Output

from components.images import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def rollout(
    image_ref: str,
    model_name: str,
    model_version: str,
    report: Output[Markdown],
    metrics: Output[Metrics],
    record: Output[Artifact],
    backend: str = "kserve",
    namespace: str = "llmops",
    deployment_mode: str = "Serverless",
    state_dir: str = "",
    metrics_provider: str = "prometheus",
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090",
    traffic_steps: str = "10,25,50,100",
    analysis_interval_s: float = 60.0,
    min_requests: int = 50,
    max_latency_ratio: float = 1.5,
    max_error_rate: float = 0.05,
    load_rps: float = 0.0,
    serving_args: str = "",
    serving_runtime: str = "llmops",
    service_account: str = "llmops-predictor",
    cpu: str = "2",
    memory: str = "8Gi",
    gpus: int = 0,
    node_selector: str = "",
    tracking_uri: str = "",
    timeout_s: float = 3600.0,
) -> str:
    """Roll ``image_ref`` (a modelcar pinned by digest) out behind a canary; returns promoted, rolled_back or error.

    Promotion moves MLflow's ``champion`` alias; a rollback records its reason on the version. An error (the
    judge could not see, the canary never became ready) does not fail this step: its report and record are
    outputs only of a step that succeeds, and the release report needs them. ``rollout_failed`` fails the run
    after the report is written.
    """
    import json
    from pathlib import Path

    from components.rollout.step import RolloutStepConfig, run_rollout_step, summary_json

    result = run_rollout_step(RolloutStepConfig(
        image_ref=image_ref, model_name=model_name, model_version=model_version, backend=backend,
        namespace=namespace, deployment_mode=deployment_mode, state_dir=state_dir, metrics_provider=metrics_provider,
        prometheus_url=prometheus_url, traffic_steps=traffic_steps, analysis_interval_s=analysis_interval_s,
        min_requests=min_requests, max_latency_ratio=max_latency_ratio, max_error_rate=max_error_rate,
        load_rps=load_rps, serving_args=serving_args, serving_runtime=serving_runtime, service_account=service_account, cpu=cpu, memory=memory,
        gpus=gpus, node_selector=node_selector, tracking_uri=tracking_uri, timeout_s=timeout_s,
    ))
    print(summary_json(result))
    Path(report.path).write_text(result.report_markdown)
    Path(record.path).write_text(json.dumps(result.report, default=str))  # the rollout as data (the release report reads it)
    metrics.log_metric("promoted", 1.0 if result.outcome == "promoted" else 0.0)
    if result.report_uri:
        report.metadata["mlflow_report"] = result.report_uri
    Path(metrics.path).write_text(json.dumps(metrics.metadata))
    return result.outcome


@dsl.component(**COMPONENT_OPTIONS)
def rollout_failed(model_name: str, model_version: str, record: Input[Artifact]) -> None:
    """Fail the run, after the release report, when the rollout ended in error; the message gives its reason."""
    from components.rollout.step import record_reason

    reason = record_reason(record.path) or "no reason recorded, see the canary rollout step"
    raise SystemExit(f"rollout of {model_name} v{model_version} failed: {reason}")
