"""``llmops rollout``: canary a new model version on an InferenceService, analysed step by step."""

from __future__ import annotations

import argparse
import json
import os
import socket
from pathlib import Path

from serving.cluster.names import PREDICTOR_SA


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rollout",
        help="canary a new model version: traffic steps, analysis, promote or roll back",
        description=(
            "Roll a new model version out on an InferenceService behind a canary. The canary "
            "takes each traffic step in turn (default 10,25,50,100); every interval its latency, "
            "errors and (with tag routing) golden-prompt answers are compared with the stable "
            "revision. A regression rolls back at once; when every step passes, the version is "
            "promoted and MLflow's `champion` alias moves (--registry-model). The state lives on "
            "the InferenceService, so a rerun after a crash resumes the same rollout. "
            "Exit codes: 0 promoted, 1 rolled back, 2 error."
        ),
    )
    where = p.add_argument_group("where")
    where.add_argument("--backend", default="local", help="serving backend: local (default) or kserve")
    where.add_argument("--name", required=True, help="InferenceService name")
    where.add_argument("--namespace", default="default", help="Kubernetes namespace (default: default)")
    where.add_argument("--state-dir", type=Path, default=None, help="local backend state folder (default: $LLMOPS_SERVING_DIR or ./.llmops/serving)")
    where.add_argument("--kubeconfig", default=None, help="kserve backend: kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    where.add_argument("--context", default=None, help="kserve backend: kubeconfig context")
    where.add_argument("--in-cluster", action="store_true", help="kserve backend: use the pod's service account (default: when no kubeconfig exists and running in a pod)")

    what = p.add_argument_group("what")
    src = what.add_mutually_exclusive_group(required=True)
    src.add_argument("--storage-uri", help="model location (local folder for the local backend; oci://repo@sha256:..., s3://, gs://, pvc:// on a cluster)")
    src.add_argument("--image", help="full serving image pinned by digest (repo@sha256:...)")
    what.add_argument("--model-version", required=True, help="registry version being rolled out (tells canary from stable)")
    what.add_argument("--model-name", default=None, help="model name the servers export and answer to (default: --name)")
    what.add_argument("--deployment-mode", default="Serverless", help="Serverless (default) or Standard; used when the service is created")
    what.add_argument("--predictor-arg", action="append", default=[], metavar="ARG", help="extra model-server argument, repeatable (e.g. --predictor-arg=--max_batch_size=4)")
    what.add_argument("--cpu", default="2", help="CPU request/limit (default 2)")
    what.add_argument("--memory", default="8Gi", help="memory request/limit (default 8Gi)")
    what.add_argument("--serving-runtime", default="llmops", help="model server: llmops (default), vllm (KServe's kserve-vllmserver) or huggingfaceserver; the analysis reads that runtime's metrics")
    what.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu per predictor pod (default 0; needs --node-selector)")
    what.add_argument("--node-selector", action="append", default=[], metavar="KEY=VALUE",
                      help="predictor node selector, repeatable (e.g. nvidia.com/gpu.present=true)")
    what.add_argument("--service-account", default=None,
                      help=f"predictor ServiceAccount (its imagePullSecrets pull the modelcar; kserve default: {PREDICTOR_SA}; "
                           "empty string: none)")

    plan = p.add_argument_group("plan")
    plan.add_argument("--steps", default="10,25,50,100", help="canary traffic percents, increasing, ending at 100 (default 10,25,50,100)")
    plan.add_argument("--interval", type=float, default=60.0, help="seconds per analysis interval (default 60)")
    plan.add_argument("--intervals-per-step", type=int, default=1, help="passing intervals needed per step (default 1)")
    plan.add_argument("--failure-limit", type=int, default=1, help="failed intervals tolerated before rollback (default 1: first failure rolls back)")
    plan.add_argument("--on-inconclusive", default="pause", help="too little traffic to judge: pause (default; keep measuring, never roll back), hold (then rollback), rollback, or promote")
    plan.add_argument("--max-inconclusive", type=int, default=3, help="hold: inconclusive intervals before rollback (default 3)")
    plan.add_argument("--bake", type=float, default=0.0, help="seconds after promotion during which a regression still rolls back (default 0)")
    plan.add_argument("--warmup", type=float, default=0.0, help="seconds a newly ready canary serves before it is measured (cold start; default 0)")
    plan.add_argument("--ready-timeout", type=float, default=600.0, help="seconds for the canary to become ready (default 600)")
    plan.add_argument("--lease-ttl", type=float, default=None, help="seconds a silent controller keeps the lease (default: max(120, 2x interval))")
    plan.add_argument("--holder", default=None, help="lease holder id (default: host-pid-random; reuse it to resume at once after a crash)")
    plan.add_argument("--timeout", type=float, default=None, help="give up after this many seconds (exit 2; a rerun resumes)")

    judge = p.add_argument_group("analysis")
    judge.add_argument("--metrics", default="scrape", help="metrics provider: scrape (default; reads the servers' /metrics) or prometheus")
    judge.add_argument("--prometheus-url", default=None, help="Prometheus base URL (with --metrics prometheus)")
    judge.add_argument("--min-requests", type=int, default=50, help="requests per revision per step before a step can pass (default 50)")
    judge.add_argument("--max-latency-ratio", type=float, default=None,
                       help="canary p95 latency and time to first token may be at most this multiple of stable's "
                       "(default 1.25, as the analysis policy; `llmops run` and the pipeline default to 1.5)")
    judge.add_argument("--policy", type=Path, default=None, help="JSON file with AnalysisPolicy fields (overrides the defaults)")
    judge.add_argument("--no-quality", action="store_true", help="skip the golden-prompt quality probe")
    judge.add_argument("--golden-set", type=Path, default=None, help="JSONL golden prompts {prompt, completion} (default: generated task test split)")
    judge.add_argument("--load-rps", type=float, default=0.0, help="send this many requests/s of golden prompts to the service during the rollout (for a service with no users)")

    reg = p.add_argument_group("registry and report")
    reg.add_argument("--registry-model", default=None, help="MLflow registered model: promotion moves `champion`, rollback is recorded")
    reg.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the project's)")
    reg.add_argument("--report-dir", type=Path, default=None, help="report folder (default: ./rollout-reports/<name>-v<version>)")
    p.set_defaults(func=run)


def build_backend(args):
    """The serving backend the `where` flags name (shared with ``llmops promote``)."""
    from pipelines.cli import CliError
    from serving.backends.base import BackendError
    from serving.backends.factory import make_backend

    try:
        if args.backend == "local":
            from pipelines.commands.serve import default_state_dir

            return make_backend("local", state_dir=args.state_dir or default_state_dir())
        if args.backend == "kserve":
            return make_backend("kserve", kubeconfig=args.kubeconfig, context=args.context, in_cluster=True if args.in_cluster else None, namespace=args.namespace)
        return make_backend(args.backend)
    except (ValueError, BackendError) as exc:
        raise CliError(str(exc)) from exc


def _policy(args):
    from pipelines.cli import CliError
    from serving.rollout.analysis import AnalysisPolicy, PolicyError

    data = {"min_requests": args.min_requests}
    if args.max_latency_ratio is not None:
        if args.max_latency_ratio < 1:
            raise CliError(f"--max-latency-ratio {args.max_latency_ratio:g}: must be at least 1 (canary p95 / stable p95)")
        data.update(max_latency_ratio=args.max_latency_ratio, max_ttft_ratio=args.max_latency_ratio)
    if args.policy:
        try:
            data.update(json.loads(args.policy.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise CliError(f"--policy {args.policy}: cannot read a JSON object ({exc})") from exc
    try:
        return AnalysisPolicy.from_dict(data)
    except (PolicyError, TypeError) as exc:
        raise CliError(f"--policy: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    from pipelines.cli import CliError
    from serving.backends.base import BackendError
    from serving.isvc import DeploymentMode, IsvcError, PredictorSpec, ServiceSpec
    from serving.rollout.controller import RolloutController, RolloutError
    from serving.rollout.hooks import MlflowHooks, NoopHooks
    from serving.rollout.report import report_writer
    from serving.rollout.runner import print_progress, run_rollout

    storage_uri = args.storage_uri
    if storage_uri and args.backend == "local" and "://" not in storage_uri:
        storage_uri = str(Path(storage_uri).resolve())
    try:
        service = ServiceSpec(
            name=args.name,
            namespace=args.namespace,
            predictor=PredictorSpec(
                storage_uri=storage_uri, image=args.image, model_version=args.model_version,
                args=tuple(args.predictor_arg), cpu=args.cpu, memory=args.memory,
                serving_runtime=args.serving_runtime, service_account=service_account(args), gpus=args.gpus,
                node_selector=node_selector(args),
                tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},) if args.gpus else (),
            ),
            deployment_mode=DeploymentMode.parse(args.deployment_mode),
        )
        service.validate()
    except IsvcError as exc:
        raise CliError(str(exc)) from exc
    strategy = build_strategy(args)

    metrics = build_metrics(args)
    model_name = args.model_name or args.name
    prompts = golden_prompts(args)
    quality = build_quality(args, prompts, model_name)
    hooks = MlflowHooks(args.registry_model, args.tracking_uri) if args.registry_model else NoopHooks()
    report_dir = args.report_dir or Path("rollout-reports") / f"{args.name}-v{args.model_version}"
    holder = args.holder or default_holder()
    backend = build_backend(args)
    try:
        controller = RolloutController(
            backend, service, strategy, metrics, quality=quality, hooks=hooks, holder=holder,
            model_name=model_name, report_writer=report_writer(report_dir),
            probe_traffic=build_probe_traffic(prompts, model_name, openai_base(args)),
        )
    except RolloutError as exc:
        raise CliError(str(exc)) from exc

    load = None
    if args.load_rps > 0:
        load = start_load(backend, args, model_name, prompts)
    try:
        from pipelines.progress import status_line

        with status_line("canary"):
            result = run_rollout(controller, report_dir=report_dir, max_duration_s=args.timeout,
                                 on_outcome=print_progress())
    except (RolloutError, BackendError, IsvcError) as exc:
        raise CliError(str(exc)) from exc
    finally:
        if load is not None:
            load.stop()
    _summary(result, args)
    return result.exit_code


def service_account(args: argparse.Namespace) -> str | None:
    """The predictor's ServiceAccount: --service-account, else the kit's predictor account on a cluster."""
    if args.service_account is not None:
        return args.service_account or None
    return PREDICTOR_SA if args.backend == "kserve" else None


def node_selector(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """``--node-selector KEY=VALUE`` pairs."""
    from pipelines.cli import CliError
    from serving.isvc import IsvcSpecError, parse_node_selector

    try:
        return parse_node_selector(args.node_selector, "--node-selector")
    except IsvcSpecError as exc:
        raise CliError(str(exc)) from None


def build_strategy(args: argparse.Namespace):
    """The :class:`RolloutStrategy` the plan flags describe (shared with ``llmops promote``)."""
    from pipelines.cli import CliError
    from serving.rollout.strategy import InconclusivePolicy, RolloutStrategy, StrategyError, parse_steps

    try:
        strategy = RolloutStrategy(
            steps=parse_steps(args.steps),
            interval_s=args.interval,
            intervals_per_step=args.intervals_per_step,
            failure_limit=args.failure_limit,
            on_inconclusive=InconclusivePolicy.parse(args.on_inconclusive),
            max_inconclusive=args.max_inconclusive,
            ready_timeout_s=args.ready_timeout,
            warmup_s=args.warmup,
            bake_s=args.bake,
            lease_ttl_s=args.lease_ttl if args.lease_ttl is not None else max(120.0, 2 * args.interval),
            quality_probe=not args.no_quality,
            analysis_policy=_policy(args),
        )
        strategy.validate()
    except StrategyError as exc:
        raise CliError(str(exc)) from exc
    return strategy


def build_metrics(args: argparse.Namespace):
    """The metrics provider the analysis flags describe (shared with ``llmops promote``)."""
    from pipelines.cli import CliError
    from serving.metrics.factory import make_provider

    runtime = getattr(args, "serving_runtime", "llmops") or "llmops"
    if runtime != "llmops" and args.backend == "local":
        raise CliError(
            f"--serving-runtime {runtime}: the local backend runs only the llmops model server; "
            "use --backend kserve (vLLM needs its own image, usually a GPU)"
        )
    if runtime != "llmops" and args.metrics != "prometheus":
        raise CliError(
            f"--serving-runtime {runtime}: the analysis reads vLLM's series through Prometheus; "
            "use --metrics prometheus --prometheus-url http://<prometheus>:9090"
        )
    if args.backend == "kserve" and args.metrics == "scrape":
        raise CliError(
            "--metrics scrape reads the model servers directly, which a cluster's pods do not expose to "
            "this machine; use --metrics prometheus --prometheus-url http://<prometheus>:9090 with --backend kserve"
        )
    if args.metrics == "prometheus" and not args.prometheus_url:
        raise CliError("--metrics prometheus needs --prometheus-url, e.g. http://prometheus.monitoring:9090")
    try:
        options = {"url": args.prometheus_url, "runtime": runtime} if args.metrics == "prometheus" else {}
        return make_provider(args.metrics, **options)
    except ValueError as exc:
        raise CliError(f"--metrics: {exc}") from exc


def openai_base(args) -> str:
    """Path of the OpenAI routes of the runtime ``--serving-runtime`` names (vLLM's own server: /v1)."""
    from pipelines.cli import CliError
    from serving.isvc import RUNTIME_PROFILES, IsvcError, ServingRuntimeKind

    try:
        return RUNTIME_PROFILES[ServingRuntimeKind.parse(getattr(args, "serving_runtime", "llmops") or "llmops")].openai_base
    except IsvcError as exc:
        raise CliError(f"--serving-runtime: {exc}") from exc


def build_quality(args, prompts, model_name: str):
    """The golden-prompt prober ``(canary_url, stable_url) -> QualityResult``, or None with --no-quality."""
    if args.no_quality:
        return None
    from serving.rollout.quality import probe

    base = openai_base(args)

    def quality(canary_url: str, stable_url: str | None):
        return probe(canary_url, stable_url, prompts, model=model_name, openai_base=base)

    return quality


def build_probe_traffic(prompts, model_name: str, base: str = "/openai/v1"):
    """``(canary_url, stable_url, n, stable_n) -> answered``: golden-prompt probes the judge asks for on thin traffic."""
    from serving.rollout.loadgen import send_probes

    texts = [p.prompt for p in prompts]
    return lambda canary_url, stable_url, n, stable_n: send_probes(
        canary_url, stable_url, model_name, texts, n, stable_n, openai_base=base
    )


def default_holder() -> str:
    """A lease holder id unique to this process: host-pid-random."""
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


def golden_prompts(args):
    """The golden prompts of the quality probe: --golden-set, or the generated task test split."""
    from pipelines.cli import CliError
    from components.bootstrap.dataset import default_golden_set
    from serving.rollout.quality import GoldenSetError, load_golden_set

    if args.golden_set is None:
        return default_golden_set()
    try:
        return load_golden_set(args.golden_set)
    except GoldenSetError as exc:
        raise CliError(f"--golden-set: {exc}") from exc


def start_load(backend, args, model_name, prompts):
    """Start the load generator on the service address; None for a first deployment."""
    from pipelines.cli import CliError
    from serving.backends.base import BackendError, NotFound
    from serving.rollout.loadgen import LoadGenerator

    try:
        url = backend.endpoints(args.name, args.namespace).url
    except NotFound:
        print(f"--load-rps: {args.namespace}/{args.name} does not exist yet: a first deployment has no canary, no load sent")
        return None
    except BackendError as exc:
        raise CliError(f"--load-rps: the service address is unknown ({exc}); deploy it first") from exc
    gen = LoadGenerator(url, model_name, [p.prompt for p in prompts], rps=args.load_rps, openai_base=openai_base(args))
    gen.start()
    return gen


def _summary(result, args) -> None:
    report = result.report or {}
    verdict = {"promoted": "PROMOTED", "rolled_back": "ROLLED BACK"}.get(result.outcome, "ERROR")
    print(f"rollout {args.namespace}/{args.name} v{args.model_version}: {verdict}")
    print(f"  reason:   {result.reason}")
    if report.get("steps"):
        print(f"  steps:    {', '.join(f'{s}%' for s in report['steps'])}; reached {report.get('step_reached')}%")
    if report.get("intervals"):
        print(f"  analysed: {len(report['intervals'])} interval(s)")
    for kind, path in sorted(result.report_paths.items()):
        print(f"  {kind + ':':9} {path}")
