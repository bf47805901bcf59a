"""KFP component of the rollout step: runs ``llmops rollout`` (the same code path as the CLI)."""

from kfp import dsl
from kfp.dsl import Markdown, Metrics, Output

from components.images import BASE_IMAGE, PACKAGES


@dsl.component(base_image=BASE_IMAGE, packages_to_install=PACKAGES)
def rollout(
    image_ref: str,
    model_name: str,
    model_version: str,
    report: Output[Markdown],
    metrics: Output[Metrics],
    backend: str = "kserve",
    namespace: str = "default",
    state_dir: str = "",
    traffic_steps: str = "10,25,50,100",
    analysis_interval_s: float = 60.0,
    min_requests: int = 50,
    max_latency_ratio: float = 1.5,
    max_error_rate: float = 0.05,
    load_rps: float = 0.0,
    serving_args: str = "",
    tracking_uri: str = "",
    timeout_s: float = 3600.0,
) -> str:
    """Roll ``image_ref`` (a modelcar pinned by digest) out behind a canary; returns promoted or rolled_back.

    Promotion moves MLflow's ``champion`` alias; a rollback records its reason on the version.
    """
    import json
    import shlex
    import shutil
    import tempfile
    from pathlib import Path

    from pipelines.cli import main as llmops

    work = Path(tempfile.mkdtemp(prefix="llmops-rollout-"))
    policy = work / "policy.json"
    policy.write_text(json.dumps({"max_latency_ratio": max_latency_ratio, "max_error_rate": max_error_rate,
                                  "min_requests": min_requests}))
    storage_uri = image_ref if image_ref.startswith(("oci://", "oci-layout:")) else "oci://" + image_ref
    argv = ["rollout", "--backend", backend, "--name", model_name, "--namespace", namespace,
            "--storage-uri", storage_uri, "--model-version", model_version, "--steps", traffic_steps,
            "--interval", str(analysis_interval_s), "--min-requests", str(min_requests), "--policy", str(policy),
            "--registry-model", model_name, "--report-dir", str(work / "report"), "--timeout", str(timeout_s)]
    if state_dir:
        argv += ["--state-dir", state_dir]
    if tracking_uri:
        argv += ["--tracking-uri", tracking_uri]
    if load_rps > 0:
        argv += ["--load-rps", str(load_rps)]
    for arg in shlex.split(serving_args):
        argv.append(f"--predictor-arg={arg}")
    code = llmops(argv)
    md = work / "report" / "rollout.md"
    if md.exists():
        shutil.copyfile(md, report.path)
    else:
        Path(report.path).write_text(f"# Rollout\n\nno report was written (exit code {code})\n")
    outcome = {0: "promoted", 1: "rolled_back"}.get(code)
    if outcome is None:
        raise SystemExit(f"rollout of {model_name} v{model_version} failed with exit code {code}; see the log above")
    metrics.log_metric("promoted", 1.0 if outcome == "promoted" else 0.0)
    Path(metrics.path).write_text(json.dumps(metrics.metadata))
    return outcome
