"""Fine-tune on Kubeflow Trainer v2: render, validate, submit and follow a ``TrainJob``.

The KFP step stages the base model and the training file on shared storage (a PVC
path mounted in the step and the TrainJob's nodes, or ``s3://`` / ``gs://``), creates a
TrainJob against the stock ``torch-distributed`` ClusterTrainingRuntime whose trainer
runs ``torchrun -m components.finetune.distributed`` on every node, prints the job's
progress and rank 0's own log lines (``progress.jsonl``) into the step's log while it waits, and pulls the
trained model back. A failed TrainJob fails the step with the job's condition reason
and message and the trainer's own last error.

The TrainJob is created with the official Kubernetes client rather than the Kubeflow SDK
(``kubeflow`` 0.5, ``TrainerClient``): the SDK's ``CustomTrainerContainer`` has no
command/args (it runs the image's entrypoint), its status and logs come from listing
Pods (more RBAC, not served by a pod-less API), and it re-raises API errors as a bare
``RuntimeError`` without the job's reason.

Errors::

    FinetuneError
    └── TrainJobError        bad options, the API refused the TrainJob, or the job failed / timed out
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any

from components.finetune.config import FinetuneConfig
from components.finetune.distributed import PROGRESS_FILE, RESULT_FILE, DistContext, Strategy
from components.finetune.errors import FinetuneError

log = logging.getLogger(__name__)

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
KIND = "TrainJob"
RUNTIME_KIND = "ClusterTrainingRuntime"
DATA_DIR = Path(__file__).with_name("kubeflow_trainer")
RUNTIME_FILE = DATA_DIR / "torch_distributed.yaml"
TRAINER_CONTAINER = "node"  # the trainer container (and replicated job) of the torch-distributed runtime
ENTRYPOINT = ["torchrun"]  # Trainer's torch plugin injects PET_* (nodes, procs, rank, master) that torchrun reads
MODULE = "components.finetune.distributed"
MANAGER = "llmops.dev/finetune"  # owner of our runtimePatches entry
LABELS = {"app.kubernetes.io/managed-by": "llmops", "app.kubernetes.io/component": "finetune"}
# pkg/apis/trainer/v1alpha1/trainjob_types.go: TrainJobComplete / TrainJobFailed condition types
COMPLETE, FAILED = "Complete", "Failed"


class TrainJobError(FinetuneError):
    """The TrainJob could not be created, or it failed or timed out (the message says which and why)."""


class TrainerKind(str, Enum):
    """Where the fine-tune runs."""

    POD = "pod"  # in the KFP step's own pod (one device)
    TRAINJOB = "trainjob"  # a Kubeflow Trainer TrainJob (torchrun over nodes x processes)

    @classmethod
    def parse(cls, name: str) -> "TrainerKind":
        try:
            return cls((name or "pod").strip().lower())
        except ValueError:
            raise TrainJobError(f"unknown trainer {name!r}; use one of {', '.join(k.value for k in cls)}") from None


def stock_runtime_name() -> str:
    """The name of the ClusterTrainingRuntime shipped with Kubeflow Trainer (``torch-distributed``)."""
    import yaml

    return yaml.safe_load(RUNTIME_FILE.read_text())["metadata"]["name"]


@dataclass(frozen=True)
class TrainJobOptions:
    """How the TrainJob is shaped and where it reads and writes."""

    storage_uri: str = ""  # shared location the step and the nodes both reach: a PVC mount path, s3://… or gs://…
    namespace: str = "llmops"  # namespace of the TrainJob
    image: str = ""  # trainer image holding llmops (default: the components image)
    num_nodes: int = 1  # nodes (pods) of the job
    procs_per_node: int = 1  # torchrun processes per node (one per GPU)
    gpus_per_node: int = 0  # nvidia.com/gpu per node (0: CPU, gloo)
    cpu_per_node: str = ""  # CPU request/limit per node, e.g. "4" (empty: the runtime's)
    memory_per_node: str = ""  # memory request/limit per node, e.g. "16Gi" (empty: the runtime's)
    runtime: str = ""  # ClusterTrainingRuntime to run against (default: Trainer's stock torch-distributed)
    pvc_name: str = ""  # with a path storage_uri: the PersistentVolumeClaim mounted at that path on every node
    checkpoint_uri: str = ""  # where checkpoints live (default: storage_uri/<job>/checkpoints)
    strategy: str = "ddp"  # ddp, or fsdp for a model one device cannot hold
    poll_interval_s: float = 5.0  # seconds between status reads
    timeout_s: float = 24 * 3600.0  # give up (and fail the step) after this long

    def validate(self) -> "TrainJobOptions":
        """Check every field; return self.

        Raises:
            TrainJobError: naming the field and the fix.
        """
        def bad(field: str, why: str) -> TrainJobError:
            return TrainJobError(f"TrainJobOptions.{field}={getattr(self, field)!r}: {why}")

        if not self.storage_uri:
            raise bad("storage_uri", "a TrainJob needs shared storage: a PVC mount path (with pvc_name) or s3:// / gs://")
        if "://" not in self.storage_uri and not self.storage_uri.startswith("/"):
            raise bad("storage_uri", "must be an absolute path (a mounted PVC) or an s3:// / gs:// URI")
        for name in ("num_nodes", "procs_per_node"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "must be an integer >= 1")
        if not isinstance(self.gpus_per_node, int) or self.gpus_per_node < 0:
            raise bad("gpus_per_node", "must be an integer >= 0")
        if self.gpus_per_node and self.procs_per_node > self.gpus_per_node:
            raise bad("procs_per_node", f"more processes than GPUs per node ({self.gpus_per_node}); use one per GPU")
        if self.poll_interval_s <= 0 or self.timeout_s <= 0:
            raise bad("poll_interval_s" if self.poll_interval_s <= 0 else "timeout_s", "must be positive seconds")
        if self.pvc_name and "://" in self.storage_uri:
            raise bad("pvc_name", "a PVC is mounted at a path; give storage_uri as that path, not a URI")
        try:
            Strategy.parse(self.strategy)
        except FinetuneError as exc:
            raise bad("strategy", str(exc)) from None
        return self

    @property
    def world_size(self) -> int:
        return self.num_nodes * self.procs_per_node

    @classmethod
    def from_dict(cls, data: dict) -> "TrainJobOptions":
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise TrainJobError(f"unknown TrainJobOptions fields: {', '.join(sorted(unknown))}; "
                                f"known: {', '.join(f.name for f in fields(cls))}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "TrainJobOptions":
        try:
            data = json.loads(text or "{}")
        except json.JSONDecodeError as exc:
            raise TrainJobError(f"TrainJob options are not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(data, dict):
            raise TrainJobError("TrainJob options must be a JSON object of TrainJobOptions fields")
        return cls.from_dict(data)


def job_name(*parts: str) -> str:
    """A DNS-1035 TrainJob name that is the same for the same inputs (a retried step finds its job again)."""
    return "llmops-ft-" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def render_trainjob(name: str, options: TrainJobOptions, *, model_uri: str, data_uri: str, out_uri: str,
                    checkpoint_uri: str, config: FinetuneConfig) -> dict[str, Any]:
    """The TrainJob object (validated against Trainer's CRD).

    Raises:
        TrainJobError: the object fails the CRD schema.
    """
    from components.images import BASE_IMAGE

    args = ["-m", MODULE, "--model", model_uri, "--data", data_uri, "--out", out_uri, "--checkpoint", checkpoint_uri,
            "--strategy", options.strategy, "--config-json", json.dumps(config.to_dict(), sort_keys=True)]
    trainer: dict[str, Any] = {
        "image": options.image or BASE_IMAGE,
        "command": list(ENTRYPOINT),
        "args": args,
        "numNodes": options.num_nodes,
        "numProcPerNode": options.procs_per_node,
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}, {"name": "HF_HUB_OFFLINE", "value": "1"},
                {"name": "TOKENIZERS_PARALLELISM", "value": "false"}],
    }
    limits = {}
    if options.gpus_per_node:
        limits["nvidia.com/gpu"] = str(options.gpus_per_node)
    if options.cpu_per_node:
        limits["cpu"] = options.cpu_per_node
    if options.memory_per_node:
        limits["memory"] = options.memory_per_node
    if limits:
        trainer["resourcesPerNode"] = {"limits": dict(limits), "requests": dict(limits)}
    spec: dict[str, Any] = {
        "runtimeRef": {"apiGroup": GROUP, "kind": RUNTIME_KIND, "name": options.runtime or stock_runtime_name()},
        "trainer": trainer,
    }
    if options.pvc_name:
        pod = {"spec": {
            "volumes": [{"name": "llmops-storage", "persistentVolumeClaim": {"claimName": options.pvc_name}}],
            "containers": [{"name": TRAINER_CONTAINER,
                            "volumeMounts": [{"name": "llmops-storage", "mountPath": options.storage_uri.rstrip("/")}]}],
        }}
        spec["runtimePatches"] = [{"manager": MANAGER, "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
            {"name": TRAINER_CONTAINER, "template": {"spec": {"template": pod}}}]}}}}]
    obj = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
           "metadata": {"name": name, "namespace": options.namespace, "labels": dict(LABELS)}, "spec": spec}
    validate_trainjob(obj)
    return obj


def crd_path() -> Path:
    """Trainer's TrainJob CRD (``LLMOPS_TRAINER_CRD`` overrides the copy shipped in the package)."""
    override = os.environ.get("LLMOPS_TRAINER_CRD")
    return Path(override) if override else DATA_DIR / "trainer.kubeflow.org_trainjobs.yaml"


@functools.lru_cache(maxsize=2)
def _validator(path: str):
    import jsonschema
    import yaml

    from serving.isvc import _strip_k8s_extensions

    with open(path, encoding="utf-8") as fh:
        crd = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == VERSION and v.get("served", True))
    return jsonschema.Draft7Validator(_strip_k8s_extensions(version["schema"]["openAPIV3Schema"]))


def validate_trainjob(obj: dict[str, Any]) -> None:
    """Validate a TrainJob against the ``v1alpha1`` schema of Trainer's CRD.

    Raises:
        TrainJobError: listing every violation with its JSON path.
    """
    if obj.get("apiVersion") != f"{GROUP}/{VERSION}" or obj.get("kind") != KIND:
        raise TrainJobError(f"expected {GROUP}/{VERSION} {KIND}, got {obj.get('apiVersion')} {obj.get('kind')}")
    body = copy.deepcopy(obj)
    body.pop("status", None)
    errors = sorted(_validator(str(crd_path())).iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors[:10]]
        raise TrainJobError("TrainJob fails Kubeflow Trainer's CRD schema:\n  " + "\n  ".join(lines))


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The ``status.conditions`` entry of type ``kind`` whose status is True, or None."""
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def load_api_client():
    """The in-cluster service account's client, else the kubeconfig's (``KUBECONFIG``)."""
    import kubernetes

    try:
        kubernetes.config.load_incluster_config()
        return kubernetes.client.ApiClient()
    except kubernetes.config.ConfigException:
        pass
    try:
        return kubernetes.config.new_client_from_config()
    except (kubernetes.config.ConfigException, OSError, TypeError) as exc:
        raise TrainJobError(f"cannot reach the Kubernetes API: no in-cluster service account and no usable "
                            f"kubeconfig ({exc}); run the step in the cluster or set KUBECONFIG") from exc


class ProgressReader:
    """Follows rank 0's ``progress.jsonl`` on shared storage; yields events not seen yet."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.seen = 0
        self.last_error: dict | None = None

    def new_events(self) -> list[dict]:
        from components.finetune.storage import filesystem

        try:
            fs, path = filesystem(self.uri)
            if not fs.exists(path):
                return []
            lines = fs.cat_file(path).decode("utf-8", "replace").splitlines()
        except (OSError, FinetuneError) as exc:
            log.debug("progress not readable yet: %s", exc)
            return []
        if len(lines) < self.seen:  # a restarted job began a new file
            self.seen = 0
        fresh = []
        for line in lines[self.seen:]:
            try:
                fresh.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line being written; read it next time
        self.seen += len(fresh)
        for ev in fresh:
            if ev.get("event") == "error":
                self.last_error = ev
        return fresh


def describe(event: dict) -> str:
    kind = event.get("event")
    if kind == "step":
        return f"trainjob: step {event['step']}/{event['max_steps']} loss {event['loss']:.4f}"
    if kind == "start":
        return f"trainjob: training started on {event['world_size']} processes ({event['strategy']})"
    if kind == "done":
        return f"trainjob: done, {event['steps']} steps, final loss {event['final_loss']:.4f}, {event['tokens_per_s']:.0f} tokens/s"
    if kind == "error":
        return f"trainjob: trainer error {event['error']}: {event['message']}"
    if kind == "log":
        return f"trainjob rank0 {event.get('level', 'INFO')}: {event.get('message', '')}"
    return f"trainjob: {json.dumps(event)}"


class TrainJobClient:
    """Creates and follows TrainJobs through the Kubernetes API (CustomObjectsApi).

    Args:
        api_client: a ``kubernetes.client.ApiClient`` (default: :func:`load_api_client`).
        sleep / clock: injectable for tests.
    """

    def __init__(self, api_client=None, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, request_timeout_s: float = 30.0) -> None:
        import kubernetes

        self._k8s = kubernetes
        self.custom = kubernetes.client.CustomObjectsApi(api_client or load_api_client())
        self.sleep, self.clock, self.timeout = sleep, clock, request_timeout_s

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, _request_timeout=self.timeout, **kwargs)
        except self._k8s.client.ApiException as exc:
            try:
                message = json.loads(exc.body or "{}").get("message") or exc.reason
            except (ValueError, AttributeError):
                message = exc.reason
            raise TrainJobError(f"{what}: the Kubernetes API answered {exc.status}: {message}") from exc
        except OSError as exc:  # urllib3 connection errors
            raise TrainJobError(f"{what}: cannot reach the Kubernetes API: {exc}") from exc

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return self._call(f"reading TrainJob {namespace}/{name}", self.custom.get_namespaced_custom_object,
                          GROUP, VERSION, namespace, PLURAL, name)

    def submit(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create the TrainJob; an existing one of that name is reused (a retried step attaches to it), or
        replaced when it failed (the new one resumes from the shared checkpoints)."""
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        try:
            return self._call(f"creating TrainJob {ns}/{name}", self.custom.create_namespaced_custom_object,
                              GROUP, VERSION, ns, PLURAL, obj)
        except TrainJobError as exc:
            if getattr(exc.__cause__, "status", None) != 409:
                raise
        current = self.get(ns, name)
        if condition(current, FAILED) is None:
            log.info("TrainJob %s/%s exists: following it", ns, name)
            return current
        log.info("TrainJob %s/%s failed before: replacing it (training resumes from its checkpoints)", ns, name)
        self._call(f"deleting TrainJob {ns}/{name}", self.custom.delete_namespaced_custom_object,
                   GROUP, VERSION, ns, PLURAL, name)
        return self._call(f"creating TrainJob {ns}/{name}", self.custom.create_namespaced_custom_object,
                          GROUP, VERSION, ns, PLURAL, obj)

    def wait(self, namespace: str, name: str, progress: ProgressReader | None, *, poll_interval_s: float,
             timeout_s: float, on_line: Callable[[str], None] = print) -> dict[str, Any]:
        """Poll until the TrainJob is Complete (returned) or Failed (raised), printing progress meanwhile.

        Raises:
            TrainJobError: the job failed (its reason and message, the trainer's last error), or ``timeout_s`` passed.
        """
        t0 = self.clock()
        while True:
            obj = self.get(namespace, name)
            for ev in progress.new_events() if progress else ():
                on_line(describe(ev))
            if condition(obj, COMPLETE) is not None:
                return obj
            failed = condition(obj, FAILED)
            if failed is not None:
                trainer = ""
                if progress is not None and progress.last_error:
                    trainer = f"; the trainer reported {progress.last_error['error']}: {progress.last_error['message']}"
                raise TrainJobError(
                    f"TrainJob {namespace}/{name} failed: {failed.get('reason', 'Failed')}: {failed.get('message', '')}"
                    f"{trainer} (logs: kubectl logs -n {namespace} -l jobset.sigs.k8s.io/jobset-name={name})"
                )
            if self.clock() - t0 > timeout_s:
                raise TrainJobError(f"TrainJob {namespace}/{name} did not finish within {timeout_s:.0f}s; "
                                    f"it is left running (delete it with kubectl delete trainjob -n {namespace} {name})")
            self.sleep(poll_interval_s)


def run_on_trainjob(model_dir: str | Path, train_file: str | Path, work_dir: str | Path, config: FinetuneConfig,
                    options: TrainJobOptions, *, client: TrainJobClient | None = None,
                    on_line: Callable[[str], None] = print):
    """Fine-tune on a TrainJob and bring the outputs back to ``work_dir`` (``model/``, loss curve, result).

    Args:
        model_dir: the base model folder (the step's input artifact).
        train_file: the training JSONL.
        work_dir: local folder for the pulled outputs.
        config: the :class:`FinetuneConfig` (validated here, before anything is submitted).
        options: the TrainJob's shape and storage.
        client: a :class:`TrainJobClient` (default: one on the in-cluster or kubeconfig API).
        on_line: where progress lines go (the step's log).

    Returns:
        The :class:`FinetuneResult`, its paths under ``work_dir``.

    Raises:
        FinetuneConfigError / TrainJobError: bad config or options (nothing submitted), the API refused the job,
            the job failed or timed out.
    """
    from components.finetune.storage import download_dir, filesystem, upload_dir
    from components.finetune.trainer import FinetuneResult
    from components.import_model.manifest import content_digest, file_sha256

    config.validate()
    options.validate()
    DistContext(world_size=options.world_size).validate(config.batch_size)
    if Strategy.parse(options.strategy) is Strategy.FSDP and options.world_size > 1 and config.checkpoint_every:
        raise TrainJobError("strategy fsdp writes no checkpoints yet: set checkpoint_every=0 in the fine-tune "
                            "config, or use strategy ddp")
    model_dir, train_file, work_dir = Path(model_dir), Path(train_file), Path(work_dir)
    if not (model_dir / "config.json").exists():
        raise FinetuneError(f"{model_dir} is not a model folder (no config.json); import the model first")
    client = client or TrainJobClient()
    name = job_name(content_digest(model_dir), file_sha256(train_file), config.fingerprint(), str(config.max_steps),
                    options.storage_uri, str(options.world_size), options.namespace)
    base = f"{options.storage_uri.rstrip('/')}/{name}"
    model_uri, data_uri, out_uri = f"{base}/inputs/model", f"{base}/inputs/train.jsonl", f"{base}/output"
    checkpoint_uri = options.checkpoint_uri or f"{base}/checkpoints"
    obj = render_trainjob(name, options, model_uri=model_uri, data_uri=data_uri, out_uri=out_uri,
                          checkpoint_uri=checkpoint_uri, config=config)
    upload_dir(model_dir, model_uri)
    fs, data_path = filesystem(data_uri)
    fs.makedirs(data_path.rsplit("/", 1)[0], exist_ok=True)
    fs.put_file(str(train_file), data_path)
    on_line(f"trainjob: inputs staged under {base}")
    client.submit(obj)
    on_line(f"trainjob: {options.namespace}/{name} submitted ({options.num_nodes} node(s) x {options.procs_per_node} "
            f"process(es), {options.gpus_per_node} GPU(s)/node, runtime {obj['spec']['runtimeRef']['name']})")
    client.wait(options.namespace, name, ProgressReader(f"{out_uri}/{PROGRESS_FILE}"),
                poll_interval_s=options.poll_interval_s, timeout_s=options.timeout_s, on_line=on_line)
    on_line(f"trainjob: {options.namespace}/{name} complete; pulling the model from {out_uri}/model")
    work_dir.mkdir(parents=True, exist_ok=True)
    download_dir(f"{out_uri}/model", work_dir / "model")
    fs, out_path = filesystem(out_uri)
    for fname in ("loss_curve.png", "loss_curve.json", RESULT_FILE):
        fs.get_file(f"{out_path.rstrip('/')}/{fname}", str(work_dir / fname))
    data = json.loads((work_dir / RESULT_FILE).read_text())
    known = {f.name for f in fields(FinetuneResult)}
    values = {k: v for k, v in data.items() if k in known}
    values.update(model_dir=work_dir / "model", adapter_dir=None, loss_curve_png=work_dir / "loss_curve.png",
                  loss_curve_json=work_dir / "loss_curve.json")
    return FinetuneResult(**values)


__all__ = ["TrainJobClient", "TrainJobError", "TrainJobOptions", "TrainerKind", "render_trainjob",
           "run_on_trainjob", "validate_trainjob"]
