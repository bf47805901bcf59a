"""The ``llm-release`` pipeline: import → fine-tune → evaluate → gate → register → image → canary.

Every step is a thin component under ``components/``; this module only wires
them. The same function runs on Kubeflow Pipelines (compiled to
``pipelines/llm_release.yaml``) and on one machine through ``kfp.local``
(``llmops run``). Platform settings (secrets, GPU for fine-tuning, caching)
are applied with ``kfp-kubernetes`` and are inert in a local run.
"""


from kfp import dsl, kubernetes

from components.build_image.component import build_image_op
from components.champion.component import champion_metrics, gate_failed
from components.dataset.component import prepare_dataset
from components.evaluate.component import evaluate
from components.finetune.component import finetune as finetune_op
from components.import_model.component import import_model
from components.register.component import register
from components.release_report.component import release_report
from components.rollout.component import rollout, rollout_failed

from pipelines.params import cluster_defaults
from serving.cluster import names

_D = cluster_defaults()  # the one source of the release knobs' defaults (pipelines/params.py)
PIPELINE_NAME = "llm-release"
MLFLOW_SECRET = names.MLFLOW_SECRET
REGISTRY_PUSH_SECRET = names.REGISTRY_PUSH_SECRET
HF_SECRET = names.HF_SECRET


def _mlflow_env(task: dsl.PipelineTask) -> None:
    """The MLflow Secret as environment variables: the URI is required (a missing Secret stops the pod,
    as kubelet does), the credentials optional."""
    kubernetes.use_secret_as_env(task, secret_name=MLFLOW_SECRET, secret_key_to_env={names.MLFLOW_URI_KEY: names.MLFLOW_URI_KEY})
    kubernetes.use_secret_as_env(
        task, secret_name=MLFLOW_SECRET, secret_key_to_env={k: k for k in names.MLFLOW_CREDENTIAL_KEYS}, optional=True,
    )


def _registry_push(task: dsl.PipelineTask) -> None:
    """The push credentials (a Docker config) as a volume, and DOCKER_CONFIG pointing at it."""
    kubernetes.use_secret_as_volume(task, secret_name=REGISTRY_PUSH_SECRET, mount_path=names.DOCKER_CONFIG_DIR, optional=True)
    task.set_env_variable(names.DOCKER_CONFIG_ENV, names.DOCKER_CONFIG_DIR)


@dsl.pipeline(name=PIPELINE_NAME, description="Release an LLM version: import, fine-tune, evaluate against the champion, register in MLflow, package as an OCI modelcar, canary on KServe with automatic rollback.")
def llm_release(
    base_model: str = _D.base_model,
    dataset: str = _D.dataset,
    model_name: str = _D.model_name,
    finetune: bool = _D.finetune,
    finetune_method: str = _D.finetune_method,
    finetune_steps: int = _D.finetune_steps,
    finetune_trainer: str = "pod",
    finetune_trainjob: str = "{}",
    learning_rate: float = _D.learning_rate,
    batch_size: int = _D.batch_size,
    seed: int = _D.seed,
    max_accuracy_drop_points: float = _D.max_accuracy_drop_points,
    max_perplexity_rise_pct: float = _D.max_perplexity_rise_pct,
    min_accuracy: float = _D.min_accuracy,
    tracking_uri: str = "",
    image_repository: str = "registry.example.com/llmops/llm",
    image_base: str = "docker.io/library/busybox:1.36",
    image_insecure: bool = False,
    serving_backend: str = "kserve",
    namespace: str = names.DEFAULT_NAMESPACE,
    deployment_mode: str = "Serverless",
    metrics_provider: str = "prometheus",
    prometheus_url: str = names.DEFAULT_PROMETHEUS_URL,
    predictor_service_account: str = names.PREDICTOR_SA,
    serving_runtime: str = "llmops",
    serving_cpu: str = "2",
    serving_memory: str = "8Gi",
    serving_gpus: int = 0,
    serving_node_selector: str = "",
    finetune_gpus: int = 0,
    serving_state_dir: str = "",
    traffic_steps: str = _D.traffic_steps,
    analysis_interval_s: float = _D.analysis_interval_s,
    min_requests: int = _D.min_requests,
    max_latency_ratio: float = _D.max_latency_ratio,
    max_error_rate: float = _D.max_error_rate,
    load_rps: float = _D.load_rps,
    serving_args: str = _D.serving_args,
):
    """Release one LLM version.

    Args:
        base_model: Model source: bootstrap://tiny, hf://org/name[@revision], s3://bucket/path, gs://bucket/path, models:/name@alias or a folder.
        dataset: Folder with train.jsonl and eval.jsonl ({"prompt","completion"} or {"messages"}), s3://, gs://, or bootstrap://tasks.
        model_name: Registered model name in MLflow; also the InferenceService name.
        finetune: Fine-tune the base model; false makes the base model the candidate.
        finetune_method: full (all weights) or lora (peft adapters, merged for serving).
        finetune_steps: Optimizer steps of the fine-tune.
        finetune_trainer: pod (train in the step's pod, one device) or trainjob (a Kubeflow Trainer TrainJob, torchrun over nodes).
        finetune_trainjob: trainjob only: JSON of TrainJobOptions, e.g. {"storage_uri": "s3://bucket/ft", "num_nodes": 2, "procs_per_node": 4, "gpus_per_node": 4}.
        learning_rate: Peak learning rate of the fine-tune.
        batch_size: Examples per optimizer step.
        seed: Seed for data order and initialisation (same seed, same model).
        max_accuracy_drop_points: Gate: exact match may fall at most this many points below the champion.
        max_perplexity_rise_pct: Gate: answer perplexity may rise at most this many percent above the champion.
        min_accuracy: Gate: exact match (percent) every candidate needs, first release included.
        tracking_uri: MLflow tracking URI; empty uses MLFLOW_TRACKING_URI from the llmops-mlflow secret (required on a cluster).
        image_repository: Where the modelcar image is pushed (registry/repo), or oci-layout:/path.
        image_base: Base image of the modelcar (needs ln and sleep); empty builds from scratch.
        image_insecure: Push over plain HTTP (local registries only).
        serving_backend: kserve (the cluster's KServe) or local (one machine).
        namespace: Kubernetes namespace of the InferenceService.
        deployment_mode: KServe deployment mode when the InferenceService is created: Serverless (Knative) or Standard.
        metrics_provider: Canary metrics: prometheus (cluster) or scrape (local backend only).
        prometheus_url: Prometheus that scrapes the predictor pods (prometheus-operator's prometheus-operated Service).
        serving_runtime: Model server of the new version: llmops (this project's server, ServingRuntime llmops-llm), vllm (KServe's kserve-vllmserver) or huggingfaceserver; the canary analysis reads that runtime's metrics (kserve backend only).
        predictor_service_account: ServiceAccount of the predictor pods (its imagePullSecrets pull the modelcar).
        serving_cpu: Predictor CPU request and limit.
        serving_memory: Predictor memory request and limit.
        serving_gpus: Predictor nvidia.com/gpu (needs serving_node_selector).
        serving_node_selector: Predictor node selector, key=value[,key=value].
        finetune_gpus: nvidia.com/gpu for the fine-tune step (0 = none; needs a CUDA build of the components image); pod trainer only: with trainjob keep 0, the step only launches and follows the job, whose nodes get gpus_per_node.
        serving_state_dir: Local backend only: its state folder.
        traffic_steps: Canary traffic percentages, increasing, ending at 100.
        analysis_interval_s: Seconds of traffic judged per analysis interval.
        min_requests: Requests per revision per interval below which an analysis is inconclusive.
        max_latency_ratio: Canary p95 latency and time to first token may be at most this multiple of the stable revision's.
        max_error_rate: Canary error rate (0..1) above which the canary fails.
        load_rps: Golden-prompt requests per second sent during the canary when the service has no users (0 = none).
        serving_args: Extra model-server flags for the new version (test-only fault injection such as --fault_latency_ms 400).
    """
    data = prepare_dataset(source=dataset).set_display_name("dataset")
    imported = import_model(source=base_model, mlflow_tracking_uri=tracking_uri).set_display_name("import")
    _mlflow_env(imported)  # models:/ sources read the registry
    kubernetes.use_secret_as_env(imported, secret_name=HF_SECRET, secret_key_to_env={names.HF_TOKEN_KEY: names.HF_TOKEN_KEY}, optional=True)

    tuned = finetune_op(
        base_model=imported.outputs["model"],
        train_data=data.outputs["train"],
        method=finetune_method,
        max_steps=finetune_steps,
        enabled=finetune,
        trainer=finetune_trainer,
        trainjob_json=finetune_trainjob,
        config_json=f'{{"learning_rate": {learning_rate}, "batch_size": {batch_size}, "seed": {seed}}}',
    ).set_display_name("fine-tune")
    # only as many GPUs as the finetune_gpus parameter asks (default 0: the CPU image runs it)
    tuned.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(finetune_gpus)
    candidate = tuned.outputs["tuned_model"]

    champion = champion_metrics(model_name=model_name, tracking_uri=tracking_uri).set_display_name("champion")
    champion.set_caching_options(False)  # the champion changes between runs
    _mlflow_env(champion)
    evaluated = evaluate(
        model=candidate,
        eval_data=data.outputs["eval_data"],
        reference_metrics_json=champion.output,
        policy_json=f'{{"max_accuracy_drop_points": {max_accuracy_drop_points}, '
        f'"max_perplexity_rise_pct": {max_perplexity_rise_pct}, "min_accuracy": {min_accuracy}}}',
    ).set_display_name("evaluate")

    with dsl.If(evaluated.outputs["Output"] == True, name="gate passed"):  # noqa: E712
        registered = register(
            model=candidate,
            metrics=evaluated.outputs["metrics"],
            name=model_name,
            gate_passed=True,
            params_json=f'{{"base_model": "{base_model}", "finetune": "{finetune}", "method": "{finetune_method}", '
            f'"steps": {finetune_steps}, "learning_rate": {learning_rate}, "batch_size": {batch_size}, "seed": {seed}}}',
            lineage_json=f'{{"source_model": "{base_model}", "dataset": "{dataset}", "dataset_sha256": "{data.outputs["Output"]}"}}',
            pipeline_name=PIPELINE_NAME,
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            tracking_uri=tracking_uri,
        ).set_display_name("register")
        registered.set_caching_options(False)
        _mlflow_env(registered)
        image = build_image_op(
            model=candidate,
            target=image_repository,
            base=image_base,
            mode="modelcar",
            insecure=image_insecure,
            model_name=model_name,
            model_version=registered.output,
            tracking_uri=tracking_uri,
        ).set_display_name("build image")
        image.set_caching_options(False)
        _mlflow_env(image)
        _registry_push(image)
        kubernetes.set_image_pull_policy(image, "IfNotPresent")
        released = rollout(
            image_ref=image.outputs["Output"],
            model_name=model_name,
            model_version=registered.output,
            backend=serving_backend,
            namespace=namespace,
            deployment_mode=deployment_mode,
            state_dir=serving_state_dir,
            metrics_provider=metrics_provider,
            prometheus_url=prometheus_url,
            service_account=predictor_service_account,
            cpu=serving_cpu,
            memory=serving_memory,
            gpus=serving_gpus,
            node_selector=serving_node_selector,
            traffic_steps=traffic_steps,
            analysis_interval_s=analysis_interval_s,
            min_requests=min_requests,
            max_latency_ratio=max_latency_ratio,
            max_error_rate=max_error_rate,
            load_rps=load_rps,
            serving_args=serving_args,
            serving_runtime=serving_runtime,
            tracking_uri=tracking_uri,
        ).set_display_name("canary rollout")
        released.set_caching_options(False)
        _mlflow_env(released)
        page = release_report(
            model_name=model_name,
            run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            outcome=released.outputs["Output"],
            version=registered.output,
            base_model=base_model,
            dataset=dataset,
            dataset_sha256=data.outputs["Output"],
            image_ref=image.outputs["Output"],
            champion_json=champion.output,
            finetune_metrics=tuned.outputs["metrics"],
            loss_curve=tuned.outputs["loss_curve"],
            image_metrics=image.outputs["metrics"],
            eval_metrics=evaluated.outputs["metrics"],
            eval_report=evaluated.outputs["report"],
            rollout_report=released.outputs["report"],
            rollout_record=released.outputs["record"],
        ).set_display_name("release report")
        page.set_caching_options(False)
        with dsl.If(released.outputs["Output"] == "error", name="rollout error"):
            failed = rollout_failed(
                model_name=model_name, model_version=registered.output, record=released.outputs["record"]
            ).set_display_name("rollout failed")
            failed.after(page)  # the run turns red only once its report is there
            failed.set_caching_options(False)
    with dsl.Else(name="gate failed"):
        gate_failed(report=evaluated.outputs["report"]).set_display_name("gate failed")
