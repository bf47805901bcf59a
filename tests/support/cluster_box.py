"""A cluster in a box: everything the Kubeflow path touches, on one machine, for the e2e test.

:func:`cluster_box` starts, and stops in reverse order:

* a real ``docker-registry`` with basic auth (the image step must push with the
  registry Secret, the predictor must pull with its service account's pull secret);
* a real ``mlflow server``;
* the Kubernetes API emulator over TLS, holding KServe's CRD schema, enforcing the
  kit's Roles and logging every call per service account;
* the KServe stand-in controller (:mod:`tests.support.kserve_standin`) turning
  revisions into real model-server processes behind a router;
* a real Prometheus scraping those processes through the kit's PodMonitor labels.

It then provisions the namespace as ``docs/cluster.md`` has a platform engineer do:
the kit's ServiceAccounts, the MLflow Secret, the registry push Secret and the
registry pull Secret, with names from :mod:`serving.cluster.names` (the single
source of truth). :meth:`ClusterBox.run_pipeline` runs the compiled pipeline as
Kubeflow would (:mod:`tests.support.cluster_runner`), as the pipeline's service
account; :meth:`ClusterBox.llmops` runs the CLI as a CI job holding a kubeconfig
for the rollout controller's service account.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from tests.support.cluster_runner import run_compiled_pipeline
from tests.support.kserve_standin import KIT, REPO, KServeController, podmonitor_scrape_config
from tests.support.kube_emulator import KubeEmulator
from tests.support.mlflow_server import MlflowServer
from tests.support.oci_registry import run_registry
from tests.support.prometheus import run_prometheus

COMPILED = REPO / "pipelines" / "llm_release.yaml"
PIPELINE_SA = "llmops-pipeline"  # the run's service account (docs/cluster.md, `llmops submit --service-account`)
CONTROLLER_SA = "llmops-rollout"  # the account CI's `llmops promote` holds a kubeconfig for
REGISTRY_USER = ("llmops-ci", "s3cret-push-pw")


def kit_documents(*folders: str) -> list[dict[str, Any]]:
    """Every YAML document of the kit's ``base`` (or the given) folders."""
    docs: list[dict[str, Any]] = []
    for folder in folders or ("base",):
        for path in sorted((KIT / folder).glob("*.yaml")):
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict))
    return docs


def kit_annotation_disallowed() -> tuple[str, ...]:
    """``serviceAnnotationDisallowedList`` of the kit's ``inferenceservice-config`` ConfigMap, if it ships one.

    KServe reads the ``inferenceService`` JSON key of that ConfigMap (pkg/apis/serving/v1beta1/configmap.go
    NewInferenceServicesConfig); with none, only KServe's defaults apply.
    """
    found: list[str] = []
    for path in sorted(KIT.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "ConfigMap" and \
                    (doc.get("metadata") or {}).get("name") == "inferenceservice-config":
                raw = (doc.get("data") or {}).get("inferenceService")
                if raw:
                    found.extend(json.loads(raw).get("serviceAnnotationDisallowedList") or ())
    return tuple(found)


@dataclass
class ClusterBox:
    """Handles to the running parts (see :func:`cluster_box`)."""

    kube: KubeEmulator
    kserve: KServeController
    registry: Any  # tests.support.oci_registry.LocalRegistry
    mlflow: Any  # tests.support.mlflow_server.MlflowServer
    prometheus_url: str
    namespace: str
    mode: str
    workdir: Path
    runs: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def image_repository(self) -> str:
        return f"{self.registry.host}/llmops/llm"

    def cluster_arguments(self) -> dict[str, Any]:
        """The pipeline's cluster parameters as a platform engineer sets them for this cluster."""
        return {
            "serving_backend": "kserve",
            "namespace": self.namespace,
            "metrics_provider": "prometheus",
            "prometheus_url": self.prometheus_url,
            "deployment_mode": self.mode,
            "tracking_uri": "",  # from the MLflow Secret, as on a cluster
            "image_repository": self.image_repository,
            "image_base": "",
            "image_insecure": True,
        }

    def run_pipeline(self, **params: Any) -> tuple[dict[str, Any], dict[str, Any], str]:
        """Run the compiled pipeline once; returns (outputs, task pods, log text)."""
        self.runs += 1
        work = self.workdir / f"run{self.runs}"
        args = {**self.cluster_arguments(), **params}
        env = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
               "MLFLOW_ENABLE_TELEMETRY": "false", "PYTHONUNBUFFERED": "1"}
        start = time.monotonic()
        buf = _Tee(work / "pipeline.log")
        with contextlib.redirect_stdout(buf):
            try:
                outputs, pods = run_compiled_pipeline(
                    COMPILED, args, self.kube, work, service_account=PIPELINE_SA, namespace=self.namespace,
                    extra_env=env, raise_on_error=True)
            except RuntimeError as exc:
                self.timings[f"run{self.runs}"] = time.monotonic() - start
                raise PipelineFailed(f"{exc}\n--- pipeline log (tail) ---\n{buf.text()[-6000:]}") from None
        self.timings[f"run{self.runs}"] = time.monotonic() - start
        return outputs, pods, buf.text()

    def kubeconfig(self, service_account: str = CONTROLLER_SA) -> Path:
        path = self.workdir / f"kubeconfig-{service_account}"
        if not path.exists():
            self.kube.write_kubeconfig(path, token=self.kube.issue_token(service_account, self.namespace))
        return path

    def llmops(self, *args: str, service_account: str = CONTROLLER_SA, timeout: float = 300,
               background: bool = False):
        """Run the CLI as a CI job does: a kubeconfig for ``service_account``, MLflow from its env."""
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig(service_account)), "MLFLOW_TRACKING_URI": self.mlflow.uri,
               "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        for var in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
            env.pop(var, None)
        cmd = [sys.executable, "-m", "pipelines", *args]
        if background:
            log = open(self.workdir / f"llmops-{time.monotonic_ns()}.log", "w+")
            return subprocess.Popen(cmd, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True), log
        return subprocess.run(cmd, cwd=self.workdir, env=env, capture_output=True, text=True, timeout=timeout)

    def isvc(self, name: str) -> dict[str, Any]:
        return self.kube.object(name, self.namespace)


class PipelineFailed(AssertionError):
    """A task of the compiled pipeline failed; the message carries the end of the run's log."""


class _Tee:
    """stdout for kfp.local's task logs: kept in a file and in memory."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("w")
        self._parts: list[str] = []

    def write(self, s: str) -> int:
        self._parts.append(s)
        self._fh.write(s)
        return len(s)

    def flush(self) -> None:
        self._fh.flush()

    def text(self) -> str:
        return "".join(self._parts)


def _dockerconfig(host: str, user: str, password: str) -> str:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps({"auths": {host: {"auth": auth}}})


def provision(kube: KubeEmulator, namespace: str, registry_host: str, mlflow_uri: str) -> None:
    """The namespace as docs/cluster.md sets it up: ServiceAccounts and Secrets (names from names.py)."""
    import kubernetes

    from serving.cluster import names

    core = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(kube.client_configuration()))
    for doc in kit_documents("base"):
        if doc.get("kind") == "ServiceAccount":
            core.create_namespaced_service_account(namespace, doc)
    dockercfg = _dockerconfig(registry_host, *REGISTRY_USER)
    secrets = [
        {"metadata": {"name": names.MLFLOW_SECRET}, "type": "Opaque",
         "stringData": {names.MLFLOW_URI_KEY: mlflow_uri}},
        {"metadata": {"name": names.REGISTRY_PUSH_SECRET}, "type": "Opaque",
         "stringData": {names.REGISTRY_PUSH_KEY: dockercfg}},
        {"metadata": {"name": names.REGISTRY_PULL_SECRET}, "type": "kubernetes.io/dockerconfigjson",
         "stringData": {".dockerconfigjson": dockercfg}},
    ]
    for body in secrets:
        core.create_namespaced_secret(namespace, {"apiVersion": "v1", "kind": "Secret", **body})


@contextlib.contextmanager
def cluster_box(workdir: str | Path, *, namespace: str = "llmops", mode: str = "Serverless",
                annotation_disallowed: tuple[str, ...] | None = None) -> Iterator[ClusterBox]:
    """Start every part, provision the namespace, yield a :class:`ClusterBox`.

    ``annotation_disallowed``: KServe's extra ``serviceAnnotationDisallowedList`` (default: the kit's).
    """
    if annotation_disallowed is None:
        annotation_disallowed = kit_annotation_disallowed()
    workdir = Path(workdir)
    overlay = "standard" if mode == "Standard" else "serverless"
    podmonitor = yaml.safe_load((KIT / "overlays" / overlay / "podmonitor.yaml").read_text())
    with contextlib.ExitStack() as stack:
        # mlflow server takes longest to start: it comes up while the rest starts (its port is fixed up front)
        mlflow = MlflowServer(workdir / "mlflow")
        mlflow_error: list[BaseException] = []

        def _start_mlflow() -> None:
            try:
                mlflow.start()
            except BaseException as exc:  # re-raised below
                mlflow_error.append(exc)

        starter = threading.Thread(target=_start_mlflow, daemon=True)
        starter.start()
        stack.callback(mlflow.stop)
        registry = stack.enter_context(run_registry(workdir / "registry", auth=REGISTRY_USER))
        kube = stack.enter_context(KubeEmulator(namespace, tls=True, auto_reconcile=False))
        kube.bind_kit_rbac(kit_documents("base"))
        provision(kube, namespace, registry.host, mlflow.uri)
        kserve = stack.enter_context(KServeController(kube, workdir / "kserve", annotation_disallowed=annotation_disallowed,
                                                      server_env={"OMP_NUM_THREADS": "1"}))
        prom = stack.enter_context(run_prometheus(
            [], workdir / "prometheus", scrape_configs=[podmonitor_scrape_config(podmonitor, kserve.targets_file)]))
        starter.join(180)
        if mlflow_error or not mlflow.alive():
            raise RuntimeError(f"mlflow server did not start: {mlflow_error[0] if mlflow_error else 'timeout'}")
        yield ClusterBox(kube=kube, kserve=kserve, registry=registry, mlflow=mlflow, prometheus_url=prom,
                         namespace=namespace, mode=mode, workdir=workdir)
