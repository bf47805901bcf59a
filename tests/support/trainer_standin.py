"""Kubeflow Trainer v2 for tests: TrainJobs on the Kubernetes API emulator, and a stand-in controller.

No Trainer controller (nor JobSet, nor kubelet) can run here. :class:`TrainerEmulator`
extends the emulator of :mod:`tests.support.kube_emulator` with the
``trainer.kubeflow.org/v1alpha1`` resources ``trainjobs`` (namespaced, with a
``status`` subresource) and ``clustertrainingruntimes`` (cluster-scoped), with the
API-server and webhook rules the fine-tune step relies on:

* a TrainJob is validated against Trainer's CRD schema (422 Invalid otherwise);
* a TrainJob whose ``runtimeRef`` names no ClusterTrainingRuntime is refused, as
  Trainer's validating webhook does (pkg/webhooks/trainjob_webhook.go
  ``TrainJobValidator.ValidateCreate`` -> pkg/runtime/core/clustertrainingruntime.go
  ``ClusterTrainingRuntime.ValidateObjects``: "specified clusterTrainingRuntime must be
  created before the TrainJob is created"); the denial is a 403 as controller-runtime
  answers a denied admission;
* creating an existing name is 409 AlreadyExists; status is written through ``/status``.

:class:`TrainerStandIn` plays the Trainer controller and what it drives (JobSet, the Job
controller, the kubelet): it picks every new TrainJob up over HTTP with the official
client, runs its trainer ``command + args`` on this machine as ``numNodes`` real
processes (each a ``torchrun`` spawning ``numProcPerNode`` ranks), and writes the status
Trainer writes. Usage::

    with TrainerEmulator(namespace="llmops") as kube, TrainerStandIn(kube) as trainer:
        ...  # create TrainJobs through kube.url; trainer.runs[name] has each job's processes
"""

from __future__ import annotations

import copy
import datetime
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp.web

from tests.support.kube_emulator import KubeEmulator, _ApiError, _make_emulator_class, _status_body, merge_patch

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
TRAINJOBS = "trainjobs"
RUNTIMES = "clustertrainingruntimes"
REPO = Path(__file__).resolve().parents[2]
RUNTIME_FILE = REPO / "components" / "finetune" / "kubeflow_trainer" / "torch_distributed.yaml"
# pkg/constants/constants.go: ContainerTrainerPort (the torch plugin's PET_MASTER_PORT); a free port is used here
DEFAULT_BACKOFF_LIMIT = 6  # batch/v1 Job: spec.backoffLimit defaults to 6 (the stock runtime sets none)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _make_trainer_emulator_class():
    import attrs
    import kmock

    base = _make_emulator_class()

    @attrs.define(kw_only=True)
    class _TrainerEmulator(base):
        """The InferenceService emulator plus TrainJobs and ClusterTrainingRuntimes."""

        objects: dict = attrs.field(factory=dict)  # (plural, namespace or "", name) -> object

        def __attrs_post_init__(self) -> None:
            super().__attrs_post_init__()
            verbs = {"get", "list", "watch", "create", "update", "patch", "delete"}
            self.resources[kmock.resource(GROUP, VERSION, TRAINJOBS)] = kmock.ResourceInfo(
                kind="TrainJob", singular="trainjob", namespaced=True, verbs=verbs, subresources={"status"})
            self.resources[kmock.resource(GROUP, VERSION, RUNTIMES)] = kmock.ResourceInfo(
                kind="ClusterTrainingRuntime", singular="clustertrainingruntime", namespaced=False, verbs=verbs)

        async def _handle(self, request) -> aiohttp.web.StreamResponse:
            plural = getattr(request.resource, "plural", None)
            if plural in (TRAINJOBS, RUNTIMES):
                verb = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
                    str(request.method.value), str(request.method.value).lower())
                if verb == "get" and request.name is None:
                    verb = "list"
                self.calls.append((verb, plural if request.subresource is None else f"{plural}/{request.subresource}"))
                try:
                    return self._trainer_api(request, plural, verb)
                except _ApiError as exc:
                    return aiohttp.web.json_response(_status_body(exc.code, exc.reason, exc.message), status=exc.code)
            return await super()._handle(request)

        def _trainer_api(self, request, plural: str, verb: str):
            ns = (request.namespace or "default") if plural == TRAINJOBS else ""
            if verb == "list":
                items = [copy.deepcopy(o) for (p, n, _), o in sorted(self.objects.items())
                         if p == plural and (plural == RUNTIMES or request.namespace in (None, n))]
                return aiohttp.web.json_response({"apiVersion": f"{GROUP}/{VERSION}", "kind": "List",
                                                  "metadata": {"resourceVersion": str(self.rv)}, "items": items})
            if verb == "create":
                body = copy.deepcopy(request.data or {})
                name = (body.get("metadata") or {}).get("name")
                key = (plural, ns, name)
                if key in self.objects:
                    raise _ApiError(409, "AlreadyExists", f'{plural}.{GROUP} "{name}" already exists')
                if plural == TRAINJOBS:
                    self._admit(body)
                meta = body.setdefault("metadata", {})
                meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1, resourceVersion=self._next_rv())
                if plural == TRAINJOBS:
                    meta["namespace"] = ns
                body.pop("status", None)
                self.objects[key] = body
                return aiohttp.web.json_response(body, status=201)
            key = (plural, ns, request.name)
            if key not in self.objects:
                raise _ApiError(404, "NotFound", f'{plural}.{GROUP} "{request.name}" not found')
            current = self.objects[key]
            if verb == "get":
                return aiohttp.web.json_response(current)
            if verb == "delete":
                del self.objects[key]
                return aiohttp.web.json_response(_status_body(200, "", "deleted") | {"status": "Success"})
            if verb == "patch":
                if "merge-patch" not in request.headers.get("Content-Type", ""):
                    raise _ApiError(415, "UnsupportedMediaType", "custom resources accept application/merge-patch+json")
                new = merge_patch(current, copy.deepcopy(request.data or {}))
                if request.subresource == "status":
                    new["spec"] = current.get("spec")
                else:
                    new["status"] = current.get("status")
                    if new.get("spec") != current.get("spec"):
                        # runtimeRef is immutable (CRD x-kubernetes-validations: self == oldSelf)
                        if (new.get("spec") or {}).get("runtimeRef") != (current.get("spec") or {}).get("runtimeRef"):
                            raise _ApiError(422, "Invalid", "spec.runtimeRef: Invalid value: field is immutable")
                        new["metadata"]["generation"] = current["metadata"]["generation"] + 1
                    self._admit(new)
                new["metadata"]["resourceVersion"] = self._next_rv()
                self.objects[key] = new
                return aiohttp.web.json_response(new)
            raise _ApiError(405, "MethodNotAllowed", f"{verb} on {plural} is not served by the emulator")

        def _admit(self, body: dict) -> None:
            from components.finetune.trainjob import TrainJobError, validate_trainjob

            try:
                validate_trainjob(body)
            except TrainJobError as exc:
                raise _ApiError(422, "Invalid", f"TrainJob.{GROUP} is invalid: {exc}") from None
            ref = (body.get("spec") or {}).get("runtimeRef") or {}
            if ref.get("kind", "ClusterTrainingRuntime") == "ClusterTrainingRuntime" and \
                    (RUNTIMES, "", ref.get("name")) not in self.objects:
                # pkg/runtime/core/clustertrainingruntime.go ClusterTrainingRuntime.ValidateObjects
                raise _ApiError(403, "Forbidden", (
                    'admission webhook "validate.trainjob.trainer.kubeflow.org" denied the request: spec.RuntimeRef: '
                    f'Invalid value: clustertrainingruntimes.{GROUP} "{ref.get("name")}" not found: specified '
                    "clusterTrainingRuntime must be created before the TrainJob is created"))

    return _TrainerEmulator


class TrainerEmulator(KubeEmulator):
    """:class:`KubeEmulator` serving TrainJobs and ClusterTrainingRuntimes; the stock ``torch-distributed``
    runtime is installed at start (as Trainer's default manifests do)."""

    def __init__(self, namespace: str = "default", install_stock_runtime: bool = True) -> None:
        super().__init__(namespace)
        self.install_stock_runtime = install_stock_runtime

    def __enter__(self) -> "TrainerEmulator":
        import kmock

        ready = threading.Event()
        errors: list[BaseException] = []

        async def main() -> None:
            import asyncio

            self._stop = asyncio.Event()
            try:
                async with _make_trainer_emulator_class()() as handler, kmock.Server(handler) as server:
                    self.handler = handler
                    self.url = str(server.url).rstrip("/")
                    ready.set()
                    await self._stop.wait()
            except BaseException as exc:  # surfaced in __enter__
                errors.append(exc)
                ready.set()

        def run() -> None:
            import asyncio

            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(main())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="trainer-emulator", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the Kubernetes emulator did not start within 30s")
        if errors:
            raise RuntimeError(f"the Kubernetes emulator failed to start: {errors[0]!r}") from errors[0]
        if self.install_stock_runtime:
            self.install_runtime(RUNTIME_FILE.read_text())
        return self

    def custom_api(self):
        import kubernetes

        return kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(self.client_configuration()))

    def install_runtime(self, text_or_obj: str | dict) -> dict:
        """Create a ClusterTrainingRuntime (YAML text or object) through the API."""
        import yaml

        obj = yaml.safe_load(text_or_obj) if isinstance(text_or_obj, str) else text_or_obj
        return self.custom_api().create_cluster_custom_object(GROUP, VERSION, RUNTIMES, obj)

    def trainjob(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        return copy.deepcopy(self.handler.objects[(TRAINJOBS, namespace or self.namespace, name)])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Run:
    """One TrainJob being run: the node processes of the current attempt."""

    def __init__(self, job: dict, runtime: dict) -> None:
        self.job = job
        self.runtime = runtime
        self.attempt = 0
        self.failures = 0
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.done = False


class TrainerStandIn:
    """Runs TrainJobs as local processes and writes their status the way Kubeflow Trainer does.

    Rules copied (file and function beside each in the code):

    * the torch plugin sets ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``,
      ``PET_MASTER_ADDR``, ``PET_MASTER_PORT`` on the trainer container; torchrun reads them;
    * while the JobSet runs, the TrainJob carries ``status.jobsStatus`` and no condition
      (Trainer v2.3 has no Created/Running condition: the condition types are Suspended,
      Complete and Failed);
    * a pod that fails is retried by its Job up to ``backoffLimit`` (the runtime's, else
      Kubernetes' default 6); then the JobSet fails and the TrainJob gets ``Failed`` with
      JobSet's reason ``FailedJobs``; when every node exits 0 it gets ``Complete`` with
      ``AllJobsCompleted``.

    Args:
        kube: the running :class:`TrainerEmulator`.
        workdir: where each job's node logs go.
        poll_s: how often the controller lists TrainJobs.
    """

    def __init__(self, kube: TrainerEmulator, workdir: Path, poll_s: float = 0.2) -> None:
        self.kube = kube
        self.workdir = Path(workdir)
        self.poll_s = poll_s
        self.runs: dict[str, _Run] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[BaseException] = []

    def __enter__(self) -> "TrainerStandIn":
        self.api = self.kube.custom_api()
        self._thread = threading.Thread(target=self._loop, name="trainer-standin", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for run in self.runs.values():
            for p in run.procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)

    def node_log(self, name: str, node: int = 0) -> str:
        return self.runs[name].logs[node].read_text(errors="replace")

    # ------------------------------------------------------------------ controller loop

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._reconcile_all()
            except Exception as exc:  # surfaced to the test through self.errors
                self.errors.append(exc)
            self._stop.wait(self.poll_s)

    def _reconcile_all(self) -> None:
        jobs = self.api.list_cluster_custom_object(GROUP, VERSION, TRAINJOBS)["items"]
        seen = set()
        for job in jobs:
            name, ns = job["metadata"]["name"], job["metadata"]["namespace"]
            key = f"{ns}/{name}"
            seen.add(key)
            run = self.runs.get(key)
            if run is not None and run.job["metadata"]["uid"] != job["metadata"]["uid"]:
                run = None  # deleted and created again: a new JobSet
            if run is None:
                if self._finished(job):
                    continue
                runtime = self.api.get_cluster_custom_object(GROUP, VERSION, RUNTIMES, job["spec"]["runtimeRef"]["name"])
                run = self.runs[key] = _Run(job, runtime)
                self._start(run)
            if not run.done:
                self._advance(run)
        for key, run in self.runs.items():  # TrainJob deleted: JobSet and pods go with it (owner references)
            if key not in seen and not run.done:
                self._kill(run)
                run.done = True

    @staticmethod
    def _finished(job: dict) -> bool:
        # pkg/util/trainjob/trainjob.go IsTrainJobFinished: Complete or Failed condition is True
        return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                   for c in (job.get("status") or {}).get("conditions") or ())

    def _backoff_limit(self, run: _Run) -> int:
        for rj in run.runtime["spec"]["template"]["spec"]["replicatedJobs"]:
            if rj["name"] == "node":
                return int(rj["template"]["spec"].get("backoffLimit", DEFAULT_BACKOFF_LIMIT))
        return DEFAULT_BACKOFF_LIMIT

    def _start(self, run: _Run) -> None:
        job = run.job
        trainer = job["spec"].get("trainer") or {}
        name = job["metadata"]["name"]
        policy = run.runtime["spec"].get("mlPolicy") or {}
        # pkg/runtime/framework/plugins/torch/torch.go EnforceMLPolicy: numNodes from the TrainJob, else the runtime
        nodes = int(trainer.get("numNodes") or policy.get("numNodes") or 1)
        # same function: numProcPerNode from the TrainJob, else "auto" (GPUs, else CPUs of resourcesPerNode, min 1)
        procs = trainer.get("numProcPerNode") or 1
        port = _free_port()
        command = list(trainer.get("command") or ()) + list(trainer.get("args") or ())
        if command and command[0] == "torchrun":  # the image's torchrun: this virtualenv's
            command[0] = str(Path(sys.executable).with_name("torchrun"))
        run.attempt += 1
        run.procs, run.logs = [], []
        logdir = self.workdir / name / f"attempt-{run.attempt}"
        logdir.mkdir(parents=True, exist_ok=True)
        for node in range(nodes):
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
            env.update({e["name"]: str(e.get("value", "")) for e in trainer.get("env") or ()})
            env.update({  # torch.go EnforceMLPolicy: petEnvs and masterEnvVars
                "PET_NNODES": str(nodes), "PET_NPROC_PER_NODE": str(procs), "PET_NODE_RANK": str(node),
                # the real address is the headless Service of node 0 ("<job>-node-0-0.<job>"); all nodes are local here
                "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port),
            })
            log = logdir / f"node-{node}.log"
            run.logs.append(log)
            with log.open("wb") as fh:
                run.procs.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                                  start_new_session=True))
        self._patch_status(run, {"jobsStatus": [self._jobs_status(active=1)]})

    @staticmethod
    def _jobs_status(active=0, succeeded=0, failed=0) -> dict:
        # pkg/runtime/framework/plugins/jobset/jobset.go JobSet.Status: one entry per replicated job
        return {"name": "node", "ready": 0, "active": active, "succeeded": succeeded, "failed": failed, "suspended": 0}

    def _advance(self, run: _Run) -> None:
        codes = [p.poll() for p in run.procs]
        if any(c not in (None, 0) for c in codes):
            self._kill(run)
            run.failures += 1
            if run.failures <= self._backoff_limit(run):  # the Job controller recreates the pod
                self._start(run)
                return
            name = run.job["metadata"]["name"]
            # jobset pkg/controllers/failure_policy.go: FailedJobsReason + messageWithFirstFailedJob;
            # trainer pkg/runtime/framework/plugins/jobset/jobset.go JobSet.Status copies it as type Failed
            cond = {"type": "Failed", "status": "True", "reason": "FailedJobs", "lastTransitionTime": _now(),
                    "message": f"jobset failed due to one or more job failures (first failed job: {name}-node-0)"}
            self._patch_status(run, {"conditions": [cond], "jobsStatus": [self._jobs_status(failed=1)]})
            run.done = True
        elif all(c == 0 for c in codes):
            # jobset pkg/controllers/jobset_controller.go setJobSetCompletedCondition (AllJobsCompleted), copied
            # by JobSet.Status as type Complete
            cond = {"type": "Complete", "status": "True", "reason": "AllJobsCompleted", "lastTransitionTime": _now(),
                    "message": "jobset completed successfully"}
            self._patch_status(run, {"conditions": [cond], "jobsStatus": [self._jobs_status(succeeded=1)]})
            run.done = True

    def _kill(self, run: _Run) -> None:
        import signal

        for p in run.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(10)

    def _patch_status(self, run: _Run, status: dict) -> None:
        # pkg/controller/trainjob_controller.go Reconcile: r.client.Status().Patch(..., client.MergeFrom(prev))
        meta = run.job["metadata"]
        self.api.patch_namespaced_custom_object_status(GROUP, VERSION, meta["namespace"], TRAINJOBS, meta["name"],
                                                       {"status": status})


def wait_for(predicate, timeout_s: float = 120.0, poll_s: float = 0.1):
    """Poll ``predicate`` until it returns a truthy value (returned) or ``timeout_s`` passes (AssertionError)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"condition not met within {timeout_s}s")


__all__ = ["TrainerEmulator", "TrainerStandIn", "wait_for"]
