"""A KServe controller stand-in for the cluster-in-a-box test: real model-server processes, KServe's rules.

No KServe (nor Knative, nor kubelet) can run here, so :class:`KServeController`
plays all three against :class:`tests.support.kube_emulator.KubeEmulator`
(``auto_reconcile=False``): it watches InferenceServices, materialises each
revision as a real ``python -m serving`` process (the project's runtime, started
as the kit's ServingRuntime says) whose model is pulled from the ``oci://``
modelcar with the predictor service account's image-pull secret, puts one
weighted router (:mod:`serving.backends.router`) in front of each service, and
writes ``status`` the way KServe does. Each rule copied from KServe or Knative
names its source beside it (kserve/kserve at the commit fetched on 2026-12-01,
``aaac4e29``; Knative Serving's documented revision/route semantics).

Prometheus discovers the pods through a ``file_sd`` targets file the controller
rewrites (:attr:`KServeController.targets_file`); each target carries the labels
the kit's PodMonitor gives on a cluster (:func:`podmonitor_scrape_config`).

Addresses: KServe's ``http://<isvc>-predictor.<ns>.<domain>`` is the router's
loopback URL; the tag-routed ``latest-``/``prev-`` hosts are the router's
``/_tag/latest`` and ``/_tag/prev`` prefixes (as the local backend does).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import hashlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

log = logging.getLogger("tests.kserve_standin")

REPO = Path(__file__).resolve().parents[2]
KIT = REPO / "serving" / "cluster"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
TAG_ANNOTATION = "serving.kserve.io/enable-tag-routing"  # constants.EnableRoutingTagAnnotationKey
# pkg/constants/constants.go ServiceAnnotationDisallowedList: never copied into the revision template
DEFAULT_ANNOTATION_DISALLOWED = (
    "autoscaling.knative.dev/min-scale",
    "autoscaling.knative.dev/max-scale",
    "internal.serving.kserve.io/storage-initializer-sourceuri",
    "kubectl.kubernetes.io/last-applied-configuration",
    "serving.kserve.io/model-format",
)
READY_PATH = "/v2/health/ready"
# replica counts and autoscaling live on the Deployment, not in its pod template (no restart when they change)
_REPLICA_FIELDS = ("minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "autoScaling", "name")


def _living_ready(dependents: list[dict[str, Any]]) -> dict[str, Any]:
    """Ready of KServe's conditionSet (inference_service_status.go: NewLivingConditionSet(PredictorReady,
    IngressReady)): knative.dev/pkg's living condition set makes Ready False as soon as one dependent is False
    (with its reason and message), else Unknown while one is Unknown, else True."""
    for status in ("False", "Unknown"):
        bad = next((c for c in dependents if c["status"] == status), None)
        if bad is not None:
            return _cond("Ready", status, bad.get("reason"), bad.get("message"))
    return _cond("Ready", "True")


def _model_version(predictor: dict[str, Any]) -> str:
    model = predictor.get("model") or {}
    return next((str(e.get("value")) for e in model.get("env") or () if e.get("name") == "LLMOPS_MODEL_VERSION"), "")


def _merge_override(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """mergo.Merge(dst, src, mergo.WithOverride) on JSON: src's non-empty values win, maps merge, lists replace."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge_override(out[k], v)
        elif v not in (None, "", [], {}):
            out[k] = copy.deepcopy(v)
    return out


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cond(type_: str, status: str, reason: str | None = None, message: str | None = None) -> dict[str, Any]:
    c = {"type": type_, "status": status, "lastTransitionTime": _now()}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


# ----------------------------------------------------------------------------- PodMonitor -> Prometheus


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def podmonitor_scrape_config(podmonitor: dict[str, Any], targets_file: Path) -> dict[str, Any]:
    """One Prometheus scrape job equivalent to what prometheus-operator generates for ``podmonitor``.

    prometheus-operator's generated config (pkg/prometheus/promcfg.go, generatePodMonitorConfig) sets
    ``job`` to ``<namespace>/<podmonitor name>``, ``namespace``, ``pod``, ``container`` and ``endpoint``
    (the port name) from the pod's metadata, then applies the endpoint's ``relabelings``. Here the pod
    metadata arrives as ``__meta_kubernetes_*`` labels in the ``file_sd`` targets file, and the same
    relabelings run in Prometheus itself.
    """
    endpoint = podmonitor["spec"]["podMetricsEndpoints"][0]
    relabel = [
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"target_label": "endpoint", "replacement": str(endpoint.get("port", ""))},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "job",
         "replacement": f"${{1}}/{podmonitor['metadata']['name']}"},
    ]
    for r in endpoint.get("relabelings") or ():  # the PodMonitor's own relabelings, camelCase -> snake_case
        relabel.append({re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), k): v for k, v in r.items()})
    return {
        "job_name": f"podMonitor/{podmonitor['metadata']['name']}",
        "metrics_path": endpoint.get("path", "/metrics"),
        "scrape_interval": "1s",
        "scrape_timeout": "900ms",
        "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
        "relabel_configs": relabel,
    }


# ----------------------------------------------------------------------------- pods


@dataclass
class Pod:
    """One revision's model-server process (what kubelet would run for its Deployment)."""

    name: str  # pod name
    revision: str  # Knative revision (Serverless) or Deployment (Standard) it belongs to
    namespace: str
    isvc: str
    version: str  # LLMOPS_MODEL_VERSION of the predictor
    labels: dict[str, str]
    state: str = "Pending"  # Pending -> Pulling -> Starting -> Ready | Failed
    reason: str | None = None
    port: int | None = None
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def url(self) -> str | None:
        return f"http://127.0.0.1:{self.port}" if self.port else None


class KServeController:
    """KServe + Knative + kubelet for the emulator; see the module docstring.

    Args:
        kube: the running emulator (created with ``auto_reconcile=False``).
        workdir: pulled models, logs, routes and the Prometheus targets file.
        registry_insecure: pull over plain HTTP (the loopback docker-registry).
        annotation_disallowed: extra ``serviceAnnotationDisallowedList`` entries (KServe's
            ``inferenceservice-config``), appended to the defaults as KServe does.
        server_env: extra environment for the model servers (e.g. ``OMP_NUM_THREADS``).
    """

    def __init__(self, kube, workdir: str | Path, *, registry_insecure: bool = True,
                 annotation_disallowed: tuple[str, ...] = (), server_env: dict[str, str] | None = None,
                 domain: str = "example.com") -> None:
        self.kube = kube
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.registry_insecure = registry_insecure
        # pkg/apis/serving/v1beta1/configmap.go NewInferenceServicesConfig: the ConfigMap's list is appended
        self.annotation_disallowed = DEFAULT_ANNOTATION_DISALLOWED + tuple(annotation_disallowed)
        self.server_env = dict(server_env or {})
        self.domain = domain
        self.runtime = yaml.safe_load((KIT / "base" / "servingruntime.yaml").read_text())
        self.targets_file = self.workdir / "pod-targets.json"
        self.targets_file.write_text("[]")
        self.pods: dict[str, Pod] = {}  # pod name -> Pod
        self.revisions: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (ns, isvc) -> Knative revisions
        self.routers: dict[tuple[str, str], dict[str, Any]] = {}
        self.modes: dict[tuple[str, str], str] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "KServeController":
        self._thread = threading.Thread(target=self._loop, name="kserve-standin", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        with self._lock:
            for pod in list(self.pods.values()):
                self._kill(pod)
            for router in self.routers.values():
                self._kill_proc(router["proc"])

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                for obj in self.kube.objects():
                    self.reconcile(obj)
                self._gc()
                self._write_targets()
            except Exception as exc:  # a controller logs and requeues; the test reads .errors
                log.exception("reconcile failed")
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.kube.wait_change(0.3)

    # ------------------------------------------------------------------ helpers for tests

    def serving_pods(self, name: str, namespace: str) -> list[Pod]:
        with self._lock:
            return [p for p in self.pods.values() if p.isvc == name and p.namespace == namespace]

    def routes(self, name: str, namespace: str) -> list[dict[str, Any]]:
        """The routing table in force (Knative Route / Gateway API HTTPRoute): revision, percent, tag, url."""
        with self._lock:
            return copy.deepcopy((self.routers.get((namespace, name)) or {}).get("targets", []))

    def revision_version(self, name: str, namespace: str, revision: str) -> str | None:
        """LLMOPS_MODEL_VERSION of a revision (Serverless) or Deployment (Standard), pods or not."""
        with self._lock:
            for rev in self.revisions.get((namespace, name), []):
                if rev["name"] == revision:
                    return _model_version(rev["predictor"])
        return None

    def pod_log(self, pod_name: str) -> str:
        pod = self.pods.get(pod_name)
        if pod is None or pod.log_path is None or not pod.log_path.exists():
            return ""
        return pod.log_path.read_text(errors="replace")

    # ------------------------------------------------------------------ reconcile

    def reconcile(self, obj: dict[str, Any]) -> None:
        """One pass of KServe's InferenceService reconciler over ``obj``."""
        meta = obj["metadata"]
        mode = (meta.get("annotations") or {}).get(MODE_ANNOTATION, "Serverless")
        with self._lock:
            self.modes[(meta.get("namespace", "default"), meta["name"])] = mode
            if mode in ("Standard", "RawDeployment"):
                status = self._reconcile_standard(obj)
            else:
                status = self._reconcile_serverless(obj)
        # knative.dev/pkg apis ConditionManager.SetCondition: lastTransitionTime moves only on a change
        old = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or ()}
        for c in status.get("conditions") or ():
            prev = old.get(c["type"])
            if prev and all(prev.get(k) == c.get(k) for k in ("status", "reason", "message")):
                c["lastTransitionTime"] = prev.get("lastTransitionTime", c["lastTransitionTime"])
        self.kube.set_status(meta["name"], meta.get("namespace", "default"), status)

    def _template(self, obj: dict[str, Any], predictor: dict[str, Any]) -> dict[str, Any]:
        """The revision template KServe gives Knative for this predictor.

        components/predictor.go buildPredictorResources: the isvc's annotations minus
        ServiceAnnotationDisallowedList, then buildObjectMeta; reconcilers/knative/ksvc_reconciler.go
        createKnativeService puts them on ``Spec.Template.ObjectMeta.Annotations`` and the pod spec in
        ``Spec.Template.Spec``; canaryTrafficPercent only shapes ``Spec.Traffic``.
        """
        annotations = {k: v for k, v in ((obj["metadata"].get("annotations") or {}).items())
                       if k not in self.annotation_disallowed}
        annotations.update(predictor.get("annotations") or {})
        spec = {k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}
        return {"annotations": annotations, "spec": spec}

    def _reconcile_serverless(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta, spec = obj["metadata"], obj.get("spec") or {}
        name, ns = meta["name"], meta.get("namespace", "default")
        predictor = spec.get("predictor") or {}
        annotations = meta.get("annotations") or {}
        old = ((obj.get("status") or {}).get("components") or {}).get("predictor") or {}
        revs = self.revisions.setdefault((ns, name), [])
        template = self._template(obj, predictor)
        # Knative Configuration: a new Revision (<config>-00001, -00002, ...) whenever the template changes
        if not revs or revs[-1]["hash"] != _hash(template):
            rev_name = f"{name}-predictor-{len(revs) + 1:05d}"
            revs.append({"name": rev_name, "hash": _hash(template), "predictor": copy.deepcopy(template["spec"])})
            self._create_pod(obj, rev_name, template["spec"], {
                "serving.knative.dev/revision": rev_name,
                "serving.knative.dev/configuration": f"{name}-predictor",
                "serving.knative.dev/service": f"{name}-predictor",
            })
        for rev in revs:
            self._observe(rev)
        latest_created = revs[-1]
        ready = [r for r in revs if r["state"] == "Ready"]
        latest_ready = ready[-1]["name"] if ready else None

        # reconcilers/knative/ksvc_reconciler.go createKnativeService: the traffic spec
        rolled = old.get("latestRolledoutRevision")
        previous = old.get("previousRolledoutRevision")
        tags = annotations.get(TAG_ANNOTATION) == "true"
        pct = predictor.get("canaryTrafficPercent")
        wanted: list[dict[str, Any]] = []
        if pct is not None and rolled:
            wanted.append({"latestRevision": True, "percent": int(pct), **({"tag": "latest"} if tags else {})})
            if int(pct) < 100:
                wanted.append({"revisionName": rolled, "latestRevision": False, "percent": 100 - int(pct), "tag": "prev"})
        else:
            wanted.append({"latestRevision": True, "percent": 100, **({"tag": "latest"} if tags else {})})

        for t in wanted:  # Knative activator: a routed revision scaled to zero gets a pod again (cold start)
            rev = next((r for r in revs if r["name"] == t.get("revisionName")), None)
            if rev is not None and not rev.get("pod"):
                self._create_pod(obj, rev["name"], rev["predictor"], {
                    "serving.knative.dev/revision": rev["name"],
                    "serving.knative.dev/configuration": f"{name}-predictor",
                    "serving.knative.dev/service": f"{name}-predictor",
                })
                self._observe(rev)

        # Knative Route: latestRevision targets resolve to the latest READY revision; none ready, no route
        router_url = self._router(name, ns)
        traffic: list[dict[str, Any]] = []
        if latest_ready:
            for t in wanted:
                rev = latest_ready if t["latestRevision"] else t["revisionName"]
                entry = {"revisionName": rev, "percent": t["percent"], "latestRevision": t["latestRevision"]}
                if t.get("tag"):
                    entry.update(tag=t["tag"], url=f"{router_url}/_tag/{t['tag']}")
                traffic.append(entry)
        self._route(name, ns, traffic)

        # pkg/apis/serving/v1beta1/inference_service_status.go PropagateStatus: rolled-out bookkeeping
        by_rev: dict[str, int] = {}
        for t in traffic:
            by_rev[t["revisionName"]] = by_rev.get(t["revisionName"], 0) + t["percent"]
        for t in traffic:
            if t["revisionName"] == latest_ready and t["latestRevision"]:
                if rolled != latest_ready:
                    if t["percent"] == 100:  # track the last revision that's fully rolled out
                        previous, rolled = rolled, latest_ready
                elif latest_ready == latest_created["name"] and t["percent"] < 100:
                    # rolled out with 100% then rolled back: the traffic is split over the same revision
                    if by_rev.get(t["revisionName"]) == 100 and previous:
                        rolled = previous

        # Knative Service conditions: ConfigurationsReady follows the latest created revision
        if latest_created["state"] == "Ready":
            config_cond = _cond("PredictorConfigurationReady", "True")
        elif latest_created["state"] == "Failed":
            config_cond = _cond("PredictorConfigurationReady", "False", "RevisionFailed",
                                f'Revision "{latest_created["name"]}" failed with message: {latest_created["reason"]}.')
        else:
            config_cond = _cond("PredictorConfigurationReady", "Unknown", "RevisionMissing",
                                f'Configuration "{name}-predictor" is waiting for a Revision to become ready.')
        route_cond = _cond("PredictorRouteReady", "True") if traffic else _cond(
            "PredictorRouteReady", "Unknown", "RevisionMissing", "no revision is ready to take traffic")
        ksvc_ready = config_cond["status"] == "True" and route_cond["status"] == "True"
        if ksvc_ready:
            predictor_cond = _cond("PredictorReady", "True")
        else:
            bad = config_cond if config_cond["status"] != "True" else route_cond
            predictor_cond = _cond("PredictorReady", bad["status"], bad.get("reason"), bad.get("message"))
        # reconcilers/ingress/ingress_reconciler.go Reconcile: while PredictorReady is not True, IngressReady
        # takes its status (Unknown while the predictor is Unknown, else False)
        if predictor_cond["status"] == "True" and traffic:
            ingress_cond = _cond("IngressReady", "True")
        else:
            ingress_cond = _cond("IngressReady", "Unknown" if predictor_cond["status"] == "Unknown" else "False",
                                 "Predictor ingress not created")
        ready_cond = _living_ready([predictor_cond, ingress_cond])

        pstatus: dict[str, Any] = {"latestCreatedRevision": latest_created["name"], "traffic": traffic}
        if latest_ready:
            pstatus["latestReadyRevision"] = latest_ready
        if rolled:
            pstatus["latestRolledoutRevision"] = rolled
        if previous:
            pstatus["previousRolledoutRevision"] = previous
        if ksvc_ready:  # PropagateStatus copies URL/Address only from a Ready ksvc
            pstatus.update(url=router_url, address={"url": router_url})
        elif old.get("url"):
            pstatus.update(url=old["url"], address=old.get("address") or {"url": old["url"]})
        status: dict[str, Any] = {
            "components": {"predictor": pstatus},
            "conditions": [config_cond, route_cond, predictor_cond, ingress_cond, ready_cond],
            "deploymentMode": "Serverless",
            "observedGeneration": meta.get("generation", 1),
        }
        if traffic:
            status.update(url=router_url, address={"url": router_url})
        return status

    def _reconcile_standard(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Standard (raw Deployment) mode with ``spec.canary[]``.

        components/predictor.go Reconcile: canaries first (reconcileCanaryDeployments), then the stable
        Deployment named constants.PredictorServiceName(isvc, spec.predictor.name); each canary's predictor
        is the stable one merged with the canary's (buildCanaryPredictor, mergo.WithOverride) in its own
        Deployment PredictorServiceName(isvc, canary.predictor.name); Deployments no longer wanted are
        deleted (the orphan cleanup at the end of reconcileCanaryDeployments).
        """
        meta, spec = obj["metadata"], obj.get("spec") or {}
        name, ns = meta["name"], meta.get("namespace", "default")
        stable_pred = spec.get("predictor") or {}

        def deploy_name(pred: dict[str, Any]) -> str:  # pkg/constants/constants.go PredictorServiceName
            return f"{name}-{pred['name']}-predictor" if pred.get("name") else f"{name}-predictor"

        wanted: dict[str, dict[str, Any]] = {deploy_name(stable_pred): stable_pred}
        canaries = []
        for entry in spec.get("canary") or ():
            merged = _merge_override(stable_pred, entry.get("predictor") or {})
            for k in ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling"):  # zeroed for canaries
                merged.pop(k, None)
            wanted[deploy_name(entry["predictor"])] = merged
            canaries.append((entry, deploy_name(entry["predictor"])))
        deployments = self.revisions.setdefault((ns, name), [])  # Standard: one record per Deployment
        by_name = {d["name"]: d for d in deployments}
        for dname, pred in wanted.items():
            template = self._template(obj, {k: v for k, v in pred.items() if k not in _REPLICA_FIELDS})
            d = by_name.get(dname)
            if d is None:
                d = {"name": dname, "hash": _hash(template), "predictor": copy.deepcopy(template["spec"])}
                deployments.append(d)
                by_name[dname] = d
                self._create_pod(obj, dname, template["spec"], {"app": f"isvc.{dname}"})
            elif d["hash"] != _hash(template):
                # a Deployment's RollingUpdate (maxUnavailable 25% of 1 = 0): the new pod first, the old
                # one serves until it is Ready
                d.update(hash=_hash(template), predictor=copy.deepcopy(template["spec"]), old_pod=d.get("pod"))
                self._create_pod(obj, dname, template["spec"], {"app": f"isvc.{dname}"})
        for d in list(deployments):
            if d["name"] not in wanted:  # orphan cleanup
                for pod_name in (d.get("pod"), d.get("old_pod")):
                    if pod_name in self.pods:
                        self._kill(self.pods.pop(pod_name))
                deployments.remove(d)
        for d in deployments:
            self._observe(d)
            old = self.pods.get(d.get("old_pod") or "")
            if old is not None and d["state"] == "Ready":
                self._kill(self.pods.pop(old.name))
                d["old_pod"] = None
            d["available"] = d["state"] == "Ready" or (old is not None and old.state == "Ready")

        # components/predictor.go reconcileCanaryDeployments: canary status (ready = AvailableReplicas > 0)
        canary_statuses = [{"name": entry["predictor"]["name"], "ready": by_name[dname]["available"],
                            "trafficPercent": int(entry.get("trafficPercent", 0))} for entry, dname in canaries]
        # reconcilers/ingress/httproute_reconciler.go applyCanaryWeights: only ready canaries get weight
        stable_name = deploy_name(stable_pred)
        ready_pct = sum(c["trafficPercent"] for c in canary_statuses if c["ready"])
        traffic = []
        if by_name[stable_name]["available"] and 100 - ready_pct > 0:
            traffic.append({"revisionName": stable_name, "percent": 100 - ready_pct, "latestRevision": False})
        for c, (_, dname) in zip(canary_statuses, canaries):
            if c["ready"]:
                traffic.append({"revisionName": dname, "percent": c["trafficPercent"], "latestRevision": True})
        router_url = self._router(name, ns)
        self._route(name, ns, traffic)

        # inference_service_status.go PropagateRawStatus: PredictorReady from the Deployment's Available condition
        stable = by_name[stable_name]
        if stable["available"]:
            predictor_cond = _cond("PredictorReady", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        elif stable["state"] == "Failed":
            predictor_cond = _cond("PredictorReady", "False", "ProgressDeadlineExceeded", stable.get("reason"))
        else:
            predictor_cond = _cond("PredictorReady", "Unknown", "ReplicaSetUpdated",
                                   f'ReplicaSet of "{stable_name}" is progressing.')
        conditions = [predictor_cond]
        if canary_statuses:
            all_ready = all(c["ready"] for c in canary_statuses)
            failed = [by_name[d]["reason"] for _, d in canaries if by_name[d]["state"] == "Failed"]
            conditions.append(_cond("CanaryPredictorReady", "True" if all_ready else "False",
                                    "AllCanariesReady" if all_ready else "CanariesNotReady",
                                    None if all_ready else "; ".join(r for r in failed if r) or None))
        # reconcilers/ingress/httproute_reconciler.go Reconcile: IngressReady False ("Predictor ingress not
        # created") whenever PredictorReady is not True, Unknown included (unlike the Knative ingress reconciler)
        ingress_cond = _cond("IngressReady", "True") if predictor_cond["status"] == "True" and traffic else _cond(
            "IngressReady", "False", "Predictor ingress not created")
        conditions.append(ingress_cond)
        conditions.append(_living_ready([predictor_cond, ingress_cond]))
        status: dict[str, Any] = {
            "components": {"predictor": {"url": router_url, "address": {"url": router_url}}},
            "conditions": conditions,
            "deploymentMode": "Standard",
            "observedGeneration": meta.get("generation", 1),
            "url": router_url,
            "address": {"url": router_url},
        }
        if canary_statuses:
            status["canaryStatuses"] = canary_statuses
        return status

    # ------------------------------------------------------------------ pods

    def _create_pod(self, obj: dict[str, Any], revision: str, predictor: dict[str, Any], labels: dict[str, str]) -> None:
        meta = obj["metadata"]
        model = predictor.get("model") or {}
        version = _model_version(predictor)
        pod_labels = {**(meta.get("labels") or {}), **labels,
                      # components/predictor.go buildObjectMeta: these two always
                      "serving.kserve.io/inferenceservice": meta["name"], "component": "predictor"}
        pod = Pod(name=f"{revision}-deployment-{_hash([revision, time.monotonic_ns()])[:5]}", revision=revision,
                  namespace=meta.get("namespace", "default"), isvc=meta["name"], version=version, labels=pod_labels)
        self.pods[pod.name] = pod
        rev = next(r for r in self.revisions.get((pod.namespace, pod.isvc), []) if r["name"] == revision) \
            if (pod.namespace, pod.isvc) in self.revisions else None
        if rev is not None:
            rev.update(state="Pending", reason=None, pod=pod.name)
        threading.Thread(target=self._run_pod, args=(pod, copy.deepcopy(predictor)), daemon=True,
                         name=f"pod-{pod.name}").start()

    def _pull_auth(self, namespace: str, predictor: dict[str, Any]) -> Path | None:
        """A DOCKER_CONFIG folder from the predictor service account's imagePullSecrets (what kubelet uses)."""
        sa_name = predictor.get("serviceAccountName")
        if not sa_name:
            return None
        sa = self.kube.core_object("serviceaccounts", sa_name, namespace)
        if sa is None:
            raise RuntimeError(f'serviceaccount "{sa_name}" not found')
        auths: dict[str, Any] = {}
        for ref in sa.get("imagePullSecrets") or ():
            secret = self.kube.core_object("secrets", ref["name"], namespace)
            if secret is None:
                continue  # kubelet ignores a missing pull secret and pulls anonymously
            raw = (secret.get("data") or {}).get(".dockerconfigjson")
            if raw:
                auths.update(json.loads(base64.b64decode(raw)).get("auths") or {})
        folder = self.workdir / "pull-auth" / f"{namespace}.{sa_name}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({"auths": auths}))
        return folder

    def _run_pod(self, pod: Pod, predictor: dict[str, Any]) -> None:
        model = predictor.get("model") or {}
        uri = model.get("storageUri") or ""
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        pod.log_path = logs / f"{pod.name}.log"
        pod.state = "Pulling"
        try:
            auth = self._pull_auth(pod.namespace, predictor)
        except RuntimeError as exc:
            pod.state, pod.reason = "Failed", str(exc)
            return
        if not uri.startswith("oci://"):
            pod.state, pod.reason = "Failed", f"storageUri {uri!r}: the stand-in serves oci:// modelcars only"
            return
        cache = self.workdir / "models"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("DOCKER_CONFIG", None)
        if auth is not None:
            env["DOCKER_CONFIG"] = str(auth)
        else:
            env["DOCKER_CONFIG"] = str(self.workdir / "no-pull-auth")
        code = ("import sys; from oci_images.pull import pull_model; "
                "print(pull_model(sys.argv[1], sys.argv[2], insecure=sys.argv[3] == '1'))")
        pulled = subprocess.run([sys.executable, "-c", code, uri, str(cache), "1" if self.registry_insecure else "0"],
                                env=env, capture_output=True, text=True, timeout=300)
        if pulled.returncode != 0:
            tail = (pulled.stderr or pulled.stdout).strip().splitlines()[-1:] or ["?"]
            pod.state, pod.reason = "Failed", f"ImagePullBackOff: {uri}: {tail[0]}"
            return
        model_dir = pulled.stdout.strip().splitlines()[-1]
        # the kit's ServingRuntime container: its command and args, then the predictor's args and env
        container = self.runtime["spec"]["containers"][0]
        pod.port = _free_port()
        args = []
        for a in container.get("args") or ():
            a = a.replace("{{.Name}}", pod.isvc).replace("/mnt/models", model_dir)
            if a.startswith("--http_port"):
                a = f"--http_port={pod.port}"
            args.append(a)
        argv = [sys.executable, *container["command"][1:], *args, "--http_host=127.0.0.1",
                *[str(a) for a in model.get("args") or ()]]
        penv = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false", **self.server_env}
        for e in container.get("env") or ():
            if e["name"] not in ("HF_HOME", "TMPDIR"):
                penv[e["name"]] = str(e.get("value", ""))
        for e in model.get("env") or ():
            if "value" in e:
                penv[e["name"]] = str(e["value"])
        with open(pod.log_path, "ab") as out:
            pod.proc = subprocess.Popen(argv, cwd=REPO, env=penv, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        pod.state = "Starting"

    def _observe(self, rev: dict[str, Any]) -> None:
        """Revision readiness from its pod: the readiness probe (GET /v2/health/ready) or the exit."""
        pod = self.pods.get(rev.get("pod", ""))
        if pod is None:
            return
        if pod.state == "Starting" and pod.proc is not None:
            if pod.proc.poll() is not None:
                pod.state = "Failed"
                tail = self.pod_log(pod.name).strip().splitlines()[-1:] or [""]
                pod.reason = f"container exited with code {pod.proc.returncode}: {tail[0][:300]}"
            else:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(pod.url + READY_PATH, timeout=0.5).status_code == 200:
                        pod.state = "Ready"
        elif pod.state == "Ready" and pod.proc is not None and pod.proc.poll() is not None:
            pod.state, pod.reason = "Failed", f"container exited with code {pod.proc.returncode}"
        rev["state"], rev["reason"] = pod.state, pod.reason

    def _gc(self) -> None:
        """Knative scales revisions nothing routes to down to zero (a retained revision keeps its name)."""
        routed = set()
        for key, router in self.routers.items():
            routed.update(t["revision"] for t in router.get("targets", []))
        with self._lock:
            for (ns, name), revs in self.revisions.items():
                if self.modes.get((ns, name)) != "Serverless":
                    continue  # Deployments keep their replicas whatever the route says
                for rev in revs[:-1]:  # the latest revision always keeps its pod
                    pod = self.pods.get(rev.get("pod", ""))
                    if pod is not None and rev["name"] not in routed and pod.state in ("Ready", "Failed"):
                        self._kill(pod)
                        del self.pods[pod.name]
                        rev.update(state="Retired", pod=None)

    def _kill(self, pod: Pod) -> None:
        self._kill_proc(pod.proc)

    @staticmethod
    def _kill_proc(proc: subprocess.Popen | None) -> None:
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    # ------------------------------------------------------------------ router and targets

    def _router(self, name: str, ns: str) -> str:
        key = (ns, name)
        router = self.routers.get(key)
        if router is None:
            routes = self.workdir / "routes" / f"{ns}.{name}.json"
            routes.parent.mkdir(parents=True, exist_ok=True)
            routes.write_text(json.dumps({"name": name, "namespace": ns, "targets": []}))
            port = _free_port()
            logs = self.workdir / "logs"
            logs.mkdir(exist_ok=True)
            with open(logs / f"router-{ns}.{name}.log", "ab") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "serving.backends.router", "--routes", str(routes), "--host", "127.0.0.1",
                     "--port", str(port)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            router = {"proc": proc, "url": f"http://127.0.0.1:{port}", "routes": routes, "targets": []}
            self.routers[key] = router
        return router["url"]

    def _route(self, name: str, ns: str, traffic: list[dict[str, Any]]) -> None:
        router = self.routers[(ns, name)]
        targets = []
        for t in traffic:
            pod = next((p for p in self.pods.values() if p.revision == t["revisionName"] and p.state == "Ready"), None)
            targets.append({"revision": t["revisionName"], "percent": t["percent"], "tag": t.get("tag"),
                            "url": pod.url if pod else None, "model_version": pod.version if pod else None})
        if targets != router["targets"]:
            tmp = router["routes"].with_suffix(".tmp")
            tmp.write_text(json.dumps({"name": name, "namespace": ns, "targets": targets}))
            os.replace(tmp, router["routes"])
            router["targets"] = targets

    def _write_targets(self) -> None:
        """The ``file_sd`` view of the running pods, with the metadata Kubernetes SD would give."""
        groups = []
        with self._lock:
            for pod in sorted(self.pods.values(), key=lambda p: p.name):
                if pod.state not in ("Starting", "Ready") or not pod.port:
                    continue
                labels = {"__meta_kubernetes_namespace": pod.namespace, "__meta_kubernetes_pod_name": pod.name,
                          "__meta_kubernetes_pod_container_name": "kserve-container"}
                for k, v in pod.labels.items():
                    labels[f"__meta_kubernetes_pod_label_{_sanitize(k)}"] = v
                    labels[f"__meta_kubernetes_pod_labelpresent_{_sanitize(k)}"] = "true"
                groups.append({"targets": [f"127.0.0.1:{pod.port}"], "labels": labels})
        text = json.dumps(groups, indent=1)
        if self.targets_file.read_text() != text:
            tmp = self.targets_file.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.targets_file)
