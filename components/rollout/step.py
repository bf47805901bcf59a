"""The rollout step as a library function: what the KFP component calls (no CLI, no argv).

:func:`run_rollout_step` builds the serving backend, the metrics provider, the
canary strategy, the golden-prompt probe and the MLflow hooks from one
:class:`RolloutStepConfig`, drives the controller to its end and returns a
:class:`RolloutStepResult`. On a cluster the ``kserve`` backend authenticates
with the pod's service account (``KUBERNETES_SERVICE_HOST``, token and CA)
when no kubeconfig exists, and the analysis reads Prometheus.

Errors::

    RolloutStepError (ValueError)   a setting that cannot work (the field and the fix are named)
"""

from __future__ import annotations

import json
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

from llmops_core.errors import LlmopsError
from serving.cluster.names import DEFAULT_NAMESPACE, DEFAULT_PROMETHEUS_URL, PREDICTOR_SA

EXIT_CODES = {"promoted": 0, "rolled_back": 1}


class RolloutStepError(LlmopsError, ValueError):
    """A rollout-step setting that cannot work; the message names the field and the fix."""


@dataclass(frozen=True)
class RolloutStepConfig:
    """Everything the rollout step varies on (the pipeline's parameters)."""

    image_ref: str  # the modelcar, pinned by digest (repo@sha256:... or oci://...)
    model_name: str  # registered model in MLflow; also the InferenceService name
    model_version: str  # the MLflow version being rolled out
    backend: str = "kserve"  # kserve (the cluster's KServe) or local (one machine)
    namespace: str = DEFAULT_NAMESPACE  # Kubernetes namespace of the InferenceService
    deployment_mode: str = "Serverless"  # Serverless or Standard; used when the service is created
    state_dir: str = ""  # local backend only: its state folder
    kubeconfig: str = ""  # kserve: a kubeconfig file; empty: $KUBECONFIG, ~/.kube/config, else the pod's service account
    metrics_provider: str = "prometheus"  # prometheus, or scrape (local backend only)
    prometheus_url: str = DEFAULT_PROMETHEUS_URL  # Prometheus that scrapes the predictor pods
    traffic_steps: str = "10,25,50,100"  # canary traffic percents, increasing, ending at 100
    analysis_interval_s: float = 60.0  # seconds of traffic judged per interval
    min_requests: int = 50  # requests per revision per interval below which an interval is inconclusive
    max_latency_ratio: float = 1.5  # canary p95 latency and TTFT may be at most this multiple of stable's
    max_error_rate: float = 0.05  # canary 5xx share above which the canary fails
    load_rps: float = 0.0  # golden-prompt requests/s sent during the canary (0: rely on real users)
    serving_args: str = ""  # extra model-server flags for the new version (shell words)
    serving_runtime: str = "llmops"  # llmops (our server), vllm (KServe's kserve-vllmserver) or huggingfaceserver
    service_account: str = PREDICTOR_SA  # spec.predictor.serviceAccountName (pulls the modelcar)
    cpu: str = "2"  # predictor CPU request/limit
    memory: str = "8Gi"  # predictor memory request/limit
    gpus: int = 0  # predictor nvidia.com/gpu (needs node_selector)
    node_selector: str = ""  # predictor node selector, "key=value,key=value"
    tracking_uri: str = ""  # MLflow; empty: $MLFLOW_TRACKING_URI
    timeout_s: float = 3600.0  # give up after this long (the state stays on the service; a rerun resumes)

    def validate(self) -> None:
        """Raise :class:`RolloutStepError` naming the first impossible field."""
        if self.backend not in ("kserve", "local"):
            raise RolloutStepError(f"backend: {self.backend!r} is not one of kserve, local")
        if self.metrics_provider not in ("prometheus", "scrape"):
            raise RolloutStepError(f"metrics_provider: {self.metrics_provider!r} is not one of prometheus, scrape")
        if self.backend == "kserve" and self.metrics_provider == "scrape":
            raise RolloutStepError(
                "metrics_provider: scrape reads the model servers directly, which the cluster's pods do not "
                "expose to this step; use prometheus with prometheus_url (e.g. http://prometheus-operated.monitoring.svc:9090)"
            )
        if self.metrics_provider == "prometheus" and not self.prometheus_url.startswith(("http://", "https://")):
            raise RolloutStepError(
                f"prometheus_url: {self.prometheus_url!r} must be an http(s) URL, e.g. http://prometheus-operated.monitoring.svc:9090"
            )
        if not self.model_version:
            raise RolloutStepError("model_version: empty; the register step's output names the version")
        from serving.isvc import IsvcError, ServingRuntimeKind

        try:
            runtime = ServingRuntimeKind.parse(self.serving_runtime)
        except IsvcError as exc:
            raise RolloutStepError(str(exc)) from None
        if runtime is not ServingRuntimeKind.LLMOPS and self.backend != "kserve":
            raise RolloutStepError(
                f"serving_runtime: {runtime.value} runs only on a cluster (serving_backend kserve); the local "
                "backend runs the llmops model server"
            )
        self.node_selector_pairs()

    def node_selector_pairs(self) -> tuple[tuple[str, str], ...]:
        from serving.isvc import IsvcSpecError, parse_node_selector

        try:
            return parse_node_selector([self.node_selector], "node_selector")
        except IsvcSpecError as exc:
            raise RolloutStepError(str(exc)) from None

    @property
    def storage_uri(self) -> str:
        ref = self.image_ref
        return ref if ref.startswith(("oci://", "oci-layout:")) or "://" in ref else "oci://" + ref


@dataclass(frozen=True)
class RolloutStepResult:
    """What the rollout step decided."""

    outcome: str  # promoted | rolled_back | error
    reason: str  # one line: why
    report_markdown: str  # the rollout report (the step's Markdown artifact)
    report_uri: str | None  # where MLflow keeps the report (runs:/...), None when not stored
    report: dict | None = None  # the rollout as data (serving.rollout.report.build_report)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.outcome, 2)


def run_rollout_step(config: RolloutStepConfig, work_dir: str | Path | None = None, *, backend=None) -> RolloutStepResult:
    """Roll ``config.image_ref`` out behind a canary and wait for the verdict.

    Args:
        config: the step's settings.
        work_dir: scratch folder for the report files (default: a new temporary folder).
        backend: a ready serving backend (default: built from ``config``; the ``kserve``
            one picks a kubeconfig or the pod's service account by itself).

    Raises:
        RolloutStepError: an impossible setting.
        serving.backends.base.BackendError, serving.rollout.controller.RolloutError:
            the backend or controller refused before anything changed.
    """
    from components.tracking import step_tracking_uri
    from serving.backends.factory import make_backend
    from serving.isvc import DeploymentMode, IsvcError, PredictorSpec, ServiceSpec
    from serving.metrics.factory import make_provider
    from serving.rollout.analysis import AnalysisPolicy, PolicyError
    from serving.rollout.controller import RolloutController
    from serving.rollout.hooks import MlflowHooks
    from components.bootstrap.dataset import default_golden_set
    from serving.rollout.quality import probe
    from serving.rollout.report import mlflow_report_writer, report_writer
    from serving.rollout.loadgen import send_probes
    from serving.rollout.runner import run_rollout
    from serving.rollout.strategy import RolloutStrategy, StrategyError, parse_steps

    config.validate()
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="llmops-rollout-"))
    report_dir = work / "report"
    try:
        predictor = PredictorSpec(
            storage_uri=config.storage_uri,
            model_version=config.model_version, args=tuple(shlex.split(config.serving_args)),
            cpu=config.cpu, memory=config.memory, gpus=config.gpus, node_selector=config.node_selector_pairs(),
            service_account=(config.service_account or None) if config.backend == "kserve" else None,
            serving_runtime=config.serving_runtime,
        )
        service = ServiceSpec(name=config.model_name, namespace=config.namespace, predictor=predictor,
                              deployment_mode=DeploymentMode.parse(config.deployment_mode))
        service.validate()
        policy = AnalysisPolicy.from_dict({"min_requests": config.min_requests, "max_latency_ratio": config.max_latency_ratio,
                                           # one tolerance for both timings: a user loosening latency expects TTFT to follow
                                           "max_ttft_ratio": config.max_latency_ratio,
                                           "max_error_rate": config.max_error_rate})
        strategy = RolloutStrategy(steps=parse_steps(config.traffic_steps), interval_s=config.analysis_interval_s,
                                   lease_ttl_s=max(120.0, 2 * config.analysis_interval_s), analysis_policy=policy)
        strategy.validate()
    except (IsvcError, PolicyError, StrategyError, TypeError) as exc:
        raise RolloutStepError(str(exc)) from exc

    if backend is not None:
        pass
    elif config.backend == "kserve":
        backend = make_backend("kserve", kubeconfig=config.kubeconfig or None, in_cluster=None, namespace=config.namespace)
    else:
        backend = make_backend("local", **({"state_dir": Path(config.state_dir)} if config.state_dir else {}))
    metrics = make_provider(config.metrics_provider, **(
        {"url": config.prometheus_url, "runtime": config.serving_runtime} if config.metrics_provider == "prometheus" else {}))
    prompts = default_golden_set()
    base = predictor.profile.openai_base  # the runtime's OpenAI routes (vLLM's own server: /v1)

    def quality(canary_url: str, stable_url: str | None):
        return probe(canary_url, stable_url, prompts, model=config.model_name, openai_base=base)

    tracking = step_tracking_uri(config.tracking_uri)
    writer = mlflow_report_writer(report_dir, tracking) if tracking else report_writer(report_dir)
    controller = RolloutController(
        backend, service, strategy, metrics, quality=quality, hooks=MlflowHooks(config.model_name, tracking),
        model_name=config.model_name, report_writer=writer,
        probe_traffic=lambda canary_url, stable_url, n, stable_n: send_probes(
            canary_url, stable_url, config.model_name, [p.prompt for p in prompts], n, stable_n, openai_base=base),
    )
    load = None
    if config.load_rps > 0:
        load = _start_load(backend, config, [p.prompt for p in prompts], base)
    try:
        result = run_rollout(controller, report_dir=report_dir, max_duration_s=config.timeout_s)
    finally:
        if load is not None:
            load.stop()
    md = report_dir / "rollout.md"
    markdown = md.read_text(encoding="utf-8") if md.exists() else f"# Rollout\n\n{result.outcome}: {result.reason}\n"
    report_uri = None
    if tracking and result.report:
        try:
            report_uri = writer(result.report)  # the final report (also after an error) replaces earlier copies
        except Exception as exc:  # the verdict stands without the stored copy
            markdown += f"\n\nreport not stored in MLflow: {exc}\n"
    return RolloutStepResult(outcome=result.outcome, reason=result.reason, report_markdown=markdown, report_uri=report_uri,
                             report=result.report or None)


def _start_load(backend, config: RolloutStepConfig, prompts: list[str], openai_base: str):
    from serving.backends.base import BackendError
    from serving.rollout.loadgen import LoadGenerator

    try:
        url = backend.endpoints(config.model_name, config.namespace).url
    except BackendError:
        return None  # a first deployment has no canary to load
    gen = LoadGenerator(url, config.model_name, prompts, rps=config.load_rps, openai_base=openai_base)
    gen.start()
    return gen


def record_reason(path: str | Path | None) -> str | None:
    """The ``reason`` of a rollout record the step wrote (its ``record`` output), or None if it has none."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8")) if path is not None else None
    except (OSError, ValueError):
        return None
    reason = data.get("reason") if isinstance(data, dict) else None
    return str(reason) if reason else None


def summary_json(result: RolloutStepResult) -> str:
    """One JSON line for the step's log."""
    return json.dumps({"outcome": result.outcome, "reason": result.reason, "report": result.report_uri})
