"""Run the compiled pipeline (``pipelines/llm_release.yaml``) the way Kubeflow Pipelines runs it on a cluster.

:func:`run_compiled_pipeline` hands the compiled IR to ``kfp.local``'s own
orchestrator (the DAG walk, conditions, artifact passing and kfp's executor in a
subprocess per task, as ``kfp.local.SubprocessRunner`` does), after applying
what a Kubeflow pod gets from the cluster and kfp.local ignores:

* ``platforms.kubernetes.deploymentSpec.executors.<executor>`` of the compiled
  YAML: every ``secretAsEnv``/``configMapAsEnv`` becomes an environment variable
  read from the Secret/ConfigMap **in the Kubernetes API emulator**, and every
  ``secretAsVolume``/``configMapAsVolume`` becomes files mounted at the declared
  ``mountPath``. A missing non-optional Secret or key fails the task as kubelet
  would (``CreateContainerConfigError``); an optional one is left out.
* the pod's service account: ``token``, ``ca.crt`` and ``namespace`` mounted at
  ``/var/run/secrets/kubernetes.io/serviceaccount`` (a token the emulator
  attributes to the run's service account) and ``KUBERNETES_SERVICE_HOST`` /
  ``KUBERNETES_SERVICE_PORT`` pointing at the emulator's TLS port, so the
  official client's ``load_incluster_config()`` works unchanged.

Mounts at absolute paths without touching the machine: each task runs in its
own mount namespace (``unshare --mount``, root), where the top folder of each
mount path gets a copy-on-write overlay and the prepared folders are bind
mounted on top. Nothing is visible outside the task.
"""

from __future__ import annotations

import base64
import copy
import os
import shlex
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


class PlatformSpecError(RuntimeError):
    """The compiled pipeline asks for something the cluster does not have (e.g. a missing Secret)."""


@dataclass
class TaskPod:
    """What one executor's pod gets: environment and mounts (mount path -> source folder)."""

    executor: str
    env: dict[str, str] = field(default_factory=dict)
    mounts: dict[str, Path] = field(default_factory=dict)
    error: str | None = None  # kubelet would refuse to start the container


def load_compiled(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pipeline spec, kubernetes platform spec) of a compiled pipeline YAML."""
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    spec = copy.deepcopy(docs[0])
    platform = spec.pop("platforms", None) or {}
    for extra in docs[1:]:  # older kfp wrote the platform spec as a second document
        platform.update(extra.get("platforms") or {})
    return spec, (platform.get("kubernetes") or {}).get("deploymentSpec", {}).get("executors", {})


def _secret_name(entry: dict[str, Any]) -> str:
    param = (entry.get("secretNameParameter") or {}).get("runtimeValue", {}).get("constant")
    return str(param or entry.get("secretName"))


def _configmap_name(entry: dict[str, Any]) -> str:
    param = (entry.get("configMapNameParameter") or {}).get("runtimeValue", {}).get("constant")
    return str(param or entry.get("configMapName"))


def _decoded(obj: dict[str, Any] | None, kind: str) -> dict[str, str] | None:
    if obj is None:
        return None
    if kind == "secrets":
        return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
    return {k: str(v) for k, v in (obj.get("data") or {}).items()}


def task_pod(executor: str, platform: dict[str, Any], kube, workdir: Path) -> TaskPod:
    """Resolve one executor's platform spec against the objects in the emulator."""
    pod = TaskPod(executor)
    folder = workdir / executor
    for kind, plural, name_of, env_key, vol_key in (
        ("Secret", "secrets", _secret_name, "secretAsEnv", "secretAsVolume"),
        ("ConfigMap", "configmaps", _configmap_name, "configMapAsEnv", "configMapAsVolume"),
    ):
        for entry in platform.get(env_key) or ():
            name = name_of(entry)
            data = _decoded(kube.core_object(plural, name), plural)
            optional = bool(entry.get("optional", False))
            for pair in entry.get("keyToEnv") or ():
                key = pair.get("secretKey") or pair.get("configMapKey")
                if data is None or key not in data:
                    if not optional and pod.error is None:
                        what = f'{kind.lower()} "{name}" not found' if data is None else f'couldn\'t find key {key} in {kind} {name}'
                        pod.error = f"CreateContainerConfigError: {what}"
                    continue
                pod.env[pair["envVar"]] = data[key]
        for entry in platform.get(vol_key) or ():
            name = name_of(entry)
            data = _decoded(kube.core_object(plural, name), plural)
            if data is None and not entry.get("optional", False) and pod.error is None:
                pod.error = f'FailedMount: {kind.lower()} "{name}" not found'
            src = folder / "volumes" / f"{plural}-{name}"
            src.mkdir(parents=True, exist_ok=True)
            for key, value in (data or {}).items():
                (src / key).write_text(value)
            pod.mounts[entry["mountPath"]] = src
    return pod


def _mount_script(mounts: dict[str, Path], scratch: Path) -> str:
    """Shell run inside the task's private mount namespace: overlay each mount root, bind the sources."""
    lines = ["set -e"]
    roots: dict[str, Path] = {}
    for target in mounts:
        real = Path(os.path.realpath(target))
        roots.setdefault("/" + real.parts[1], real)
    for i, root in enumerate(sorted(roots)):
        upper, work = scratch / f"upper{i}", scratch / f"work{i}"
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        lines.append(f"mount -t overlay overlay -o lowerdir={root},upperdir={upper},workdir={work} {root}")
    for target, src in mounts.items():
        real = os.path.realpath(target)
        lines.append(f"mkdir -p {shlex.quote(real)} && mount --bind -o ro {shlex.quote(str(src))} {shlex.quote(real)}")
    lines.append('exec "$@"')
    return "\n".join(lines)


def prepare_spec(spec: dict[str, Any], executors: dict[str, Any], kube, workdir: Path, *,
                 service_account: str, namespace: str, extra_env: dict[str, str] | None = None) -> dict[str, TaskPod]:
    """Rewrite each executor of ``spec`` (in place) to run as its Kubeflow pod would; return the pods."""
    pods: dict[str, TaskPod] = {}
    sa_dir = kube.service_account_files(workdir / "serviceaccount", service_account, namespace)
    for name, executor in spec["deploymentSpec"]["executors"].items():
        container = executor.get("container")
        if container is None:
            continue  # importers run in the driver
        pod = task_pod(name, executors.get(name) or {}, kube, workdir)
        pod.mounts[SA_MOUNT] = sa_dir
        pod.env.update({"KUBERNETES_SERVICE_HOST": kube.host, "KUBERNETES_SERVICE_PORT": str(kube.port),
                        **(extra_env or {})})
        pods[name] = pod
        env = [e for e in container.get("env") or () if e.get("name") not in pod.env]
        container["env"] = env + [{"name": k, "value": v} for k, v in pod.env.items()]
        command = list(container.get("command") or ())
        if pod.error is not None:
            # kubelet never starts the container; the executor module name keeps kfp.local's check happy
            container["command"] = ["sh", "-c", f"echo {shlex.quote(pod.error)} >&2; exit 1", "kfp.dsl.executor_main"]
            container["args"] = []
            continue
        scratch = workdir / name / f"ns-{uuid.uuid4().hex[:6]}"
        container["command"] = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                _mount_script(pod.mounts, scratch), "sh", *command]
    return pods


def run_compiled_pipeline(path: str | Path, arguments: dict[str, Any], kube, workdir: str | Path, *,
                          service_account: str, namespace: str, extra_env: dict[str, str] | None = None,
                          raise_on_error: bool = False, cache_root: str | Path | None = None) -> tuple[dict[str, Any], dict[str, TaskPod]]:
    """Run the compiled pipeline at ``path`` with ``arguments``; return (pipeline outputs, task pods).

    Args:
        path: compiled pipeline YAML.
        arguments: pipeline parameters (as a Kubeflow run's parameters).
        kube: :class:`tests.support.kube_emulator.KubeEmulator` started with ``tls=True``.
        workdir: pipeline root, mounted files and scratch (created).
        service_account: the Kubernetes service account the run's pods use.
        namespace: the namespace the run's pods are in.
        extra_env: environment every task gets besides its platform spec (e.g. OMP_NUM_THREADS).
        raise_on_error: raise when a task fails (else kfp.local logs the failure and returns {}).
        cache_root: share kfp's task cache across runs here (Kubeflow caches by default; tasks
            compiled with caching off still run every time). None: no cache.
    """
    from google.protobuf import json_format
    from kfp import local
    from kfp.local import pipeline_orchestrator
    from kfp.pipeline_spec import pipeline_spec_pb2

    if shutil.which("unshare") is None:
        raise PlatformSpecError("unshare (util-linux) is needed to mount the pods' secrets at their paths")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    spec, executors = load_compiled(path)
    pods = prepare_spec(spec, executors, kube, workdir / "pods", service_account=service_account,
                        namespace=namespace, extra_env=extra_env)
    proto = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(workdir / "root"),
               raise_on_error=raise_on_error, enable_caching=cache_root is not None,
               cache_root=str(cache_root) if cache_root is not None else None)
    outputs = pipeline_orchestrator.run_local_pipeline(proto, arguments)
    return outputs, pods
