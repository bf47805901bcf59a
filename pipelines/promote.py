"""Promote a registered model version onto its InferenceService through the canary.

``llmops promote`` resolves a version in MLflow, reads the OCI image the
pipeline's image step recorded on it (lineage key ``image_ref``), and hands it
to the same rollout code as ``llmops rollout``
(:class:`~serving.rollout.controller.RolloutController` driven by
:func:`~serving.rollout.runner.run_rollout`) with storage URI
``oci://<image_ref>``. A dry run shows the plan and the exact change to the
InferenceService as a unified YAML diff and changes nothing.

Errors::

    PromoteError
    ├── TargetError        unknown model/version/alias, both or neither of version and alias
    └── NoImageError       the version has no image recorded
"""

from __future__ import annotations

from llmops_core.errors import LlmopsError

import copy
import difflib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from serving.backends.base import NotFound, ServingBackend
from serving.isvc import DeploymentMode, PredictorSpec, ServiceSpec, render_isvc, render_predictor
from serving.rollout.strategy import RolloutStrategy

log = logging.getLogger(__name__)

IMAGE_KEY = "image_ref"  # lineage key the image step writes (``llmops.image_ref``)
VOLATILE_METADATA = ("resourceVersion", "uid", "generation", "creationTimestamp", "managedFields", "selfLink")


class PromoteError(LlmopsError):
    """Base of this module's errors."""


class TargetError(PromoteError):
    """The version to promote cannot be named or found."""


class NoImageError(PromoteError):
    """The version has no OCI image recorded; it cannot be served from a cluster."""


@dataclass(frozen=True)
class PromoteTarget:
    """A registered version and the image that serves it."""

    model: str  # MLflow registered model name
    version: str  # version number
    image_ref: str  # host/repo@sha256:...
    ref: str = ""  # what the user asked for ("3", "@challenger")

    @property
    def storage_uri(self) -> str:
        return self.image_ref if self.image_ref.startswith("oci://") else "oci://" + self.image_ref

    def validate(self) -> "PromoteTarget":
        from serving.isvc import require_digest

        if not self.model or not self.version:
            raise TargetError("model and version are required")
        try:
            require_digest(self.storage_uri, IMAGE_KEY)
        except ValueError as exc:
            raise NoImageError(
                f"{self.model} v{self.version}: the recorded image {self.image_ref!r} is not pinned by digest ({exc}); "
                "run the pipeline's image step or `llmops build-image` again"
            ) from exc
        return self


def version_ref(version: str | None, alias: str | None) -> str:
    """The registry reference from ``--version``/``--alias``; exactly one is needed."""
    if bool(version) == bool(alias):
        raise TargetError(
            "give exactly one of --version N or --alias NAME (e.g. --alias challenger), "
            + ("not both" if version else "none was given")
        )
    return str(version) if version else "@" + str(alias).lstrip("@")


def resolve_target(model: str, version: str | None = None, alias: str | None = None, tracking_uri: str | None = None) -> PromoteTarget:
    """Resolve ``model`` at ``version`` or ``alias`` in MLflow and read its image.

    Raises:
        TargetError: both or neither of version/alias, unknown model, version or alias.
        NoImageError: the version has no ``image_ref`` lineage.
        model_registry.RegistryUnavailable: MLflow cannot be reached.
    """
    import model_registry
    from model_registry import ModelNotFound, VersionNotFound

    ref = version_ref(version, alias)
    try:
        resolved = model_registry.resolve(model, ref, tracking_uri=tracking_uri)
        lineage = model_registry.get_lineage(model, resolved.version, tracking_uri=tracking_uri)
    except (ModelNotFound, VersionNotFound) as exc:
        raise TargetError(str(exc)) from exc
    image = lineage.get(IMAGE_KEY)
    if not image:
        raise NoImageError(
            f"{model} v{resolved.version} has no image recorded (lineage key {IMAGE_KEY!r}); "
            "run the pipeline's image step or `llmops build-image` to package it as an OCI image first"
        )
    return PromoteTarget(model=model, version=resolved.version, image_ref=str(image), ref=ref).validate()


def service_spec(
    target: PromoteTarget,
    name: str,
    namespace: str = "default",
    *,
    deployment_mode: str | DeploymentMode = DeploymentMode.SERVERLESS,
    cpu: str = "2",
    memory: str = "8Gi",
    predictor_args: tuple[str, ...] = (),
    service_account: str | None = None,
    gpus: int = 0,
    node_selector: tuple[tuple[str, str], ...] = (),
) -> ServiceSpec:
    """The InferenceService that serves ``target`` (validated).

    ``service_account`` becomes ``spec.predictor.serviceAccountName`` (its imagePullSecrets
    pull a private modelcar); ``gpus`` needs ``node_selector`` pairs naming GPU nodes.
    """
    spec = ServiceSpec(
        name=name,
        namespace=namespace,
        predictor=PredictorSpec(
            storage_uri=target.storage_uri, model_version=target.version, args=tuple(predictor_args), cpu=cpu, memory=memory,
            service_account=service_account or None, gpus=gpus, node_selector=tuple(node_selector),
        ),
        deployment_mode=DeploymentMode.parse(deployment_mode),
    )
    spec.validate()
    return spec


def _comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """The part of an object a user writes: no status, no server-set metadata."""
    out = {k: copy.deepcopy(v) for k, v in obj.items() if k != "status"}
    meta = dict(out.get("metadata") or {})
    for key in VOLATILE_METADATA:
        meta.pop(key, None)
    out["metadata"] = meta
    return out


def _dump(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=True, default_flow_style=False)


@dataclass(frozen=True)
class PlannedChange:
    """What a promotion would write first."""

    current: dict[str, Any] | None  # the object as the backend has it (None: it does not exist)
    proposed: dict[str, Any]  # the object after the first canary step
    diff: str  # unified YAML diff (the full object when it is created)

    @property
    def creates(self) -> bool:
        return self.current is None


def plan_change(backend: ServingBackend, spec: ServiceSpec, strategy: RolloutStrategy) -> PlannedChange:
    """The first write of the rollout: the canary at ``strategy.steps[0]`` (or the whole object when new).

    Reads the backend only. The rollout also records its state in ``llmops.io/rollout-*``
    annotations, which are left out of the diff.
    """
    from serving.rollout.controller import canary_entry, strip_canary

    try:
        current = backend.get(spec.name, spec.namespace)
    except NotFound:
        proposed = render_isvc(spec)
        text = _dump(proposed)
        return PlannedChange(None, proposed, "".join("+" + line for line in text.splitlines(keepends=True)))
    before = _comparable(current)
    after = copy.deepcopy(before)
    mode = DeploymentMode.parse(((before.get("metadata") or {}).get("annotations") or {}).get(
        "serving.kserve.io/deploymentMode", spec.deployment_mode))
    weight = strategy.steps[0]
    if mode is DeploymentMode.SERVERLESS:
        after["spec"]["predictor"] = render_isvc(spec, canary_traffic_percent=weight)["spec"]["predictor"]
    else:
        after["spec"]["predictor"] = strip_canary(after["spec"].get("predictor") or {})
        after["spec"]["canary"] = [canary_entry(render_predictor(spec.predictor), weight, after["spec"]["predictor"])]
    where = f"inferenceservice/{spec.namespace}/{spec.name}"
    diff = "".join(difflib.unified_diff(
        _dump(before).splitlines(keepends=True), _dump(after).splitlines(keepends=True),
        fromfile=f"{where} (current)", tofile=f"{where} (canary at {weight}%)",
    ))
    return PlannedChange(before, after, diff)


def plan_text(target: PromoteTarget, spec: ServiceSpec, strategy: RolloutStrategy) -> str:
    """The canary plan in words: steps, intervals, analysis thresholds."""
    from serving.rollout.analysis import AnalysisPolicy

    policy = strategy.analysis_policy or AnalysisPolicy()
    lines = [
        f"promote {target.model} v{target.version} ({target.ref or target.version}) onto inferenceservice {spec.namespace}/{spec.name}",
        f"  image:      {target.storage_uri}",
        f"  steps:      {', '.join(f'{s}%' for s in strategy.steps)}",
        f"  interval:   {strategy.interval_s:g}s x {strategy.intervals_per_step} per step; failure limit {strategy.failure_limit}; "
        f"inconclusive: {strategy.on_inconclusive.value} (max {strategy.max_inconclusive})",
        f"  timing:     ready timeout {strategy.ready_timeout_s:g}s, warmup {strategy.warmup_s:g}s, bake {strategy.bake_s:g}s",
        "  analysis:",
    ]
    for name, value in policy.__dict__.items():
        lines.append(f"    {name:<24} {'off' if value is None else value}")
    lines.append(f"  quality probe: {'on' if strategy.quality_probe else 'off'}")
    return "\n".join(lines)


def promote(
    target: PromoteTarget,
    backend: ServingBackend,
    spec: ServiceSpec,
    strategy: RolloutStrategy,
    metrics: Any,
    *,
    quality: Callable | None = None,
    probe_traffic: Callable[[str, str, int], int] | None = None,
    hooks: Any = None,
    holder: str | None = None,
    model_name: str | None = None,
    report_dir: str | Path | None = None,
    max_duration_s: float | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    on_outcome: Callable | None = None,
):
    """Roll ``target`` out on ``spec`` with the rollout controller (the code ``llmops rollout`` runs).

    Returns:
        :class:`serving.rollout.runner.RolloutResult` (``exit_code`` 0 promoted, 1 rolled back, 2 error).

    Raises:
        serving.rollout.controller.RolloutError: refused before anything changed.
    """
    from serving.rollout.controller import RolloutController
    from serving.rollout.report import report_writer
    from serving.rollout.runner import run_rollout

    if spec.predictor.model_version != target.version or spec.predictor.storage_uri != target.storage_uri:
        raise TargetError("the service spec does not serve the target; build it with service_spec(target, ...)")
    controller = RolloutController(
        backend, spec, strategy, metrics, quality=quality, hooks=hooks, holder=holder, model_name=model_name,
        report_writer=report_writer(report_dir) if report_dir is not None else None, probe_traffic=probe_traffic,
    )
    log.info("promoting %s v%s onto %s/%s", target.model, target.version, spec.namespace, spec.name)
    return run_rollout(controller, clock=clock, sleep=sleep, report_dir=report_dir, max_duration_s=max_duration_s, on_outcome=on_outcome)


VERDICTS = {"promoted": "PROMOTED", "rolled_back": "ROLLED BACK"}


def summary_lines(target: PromoteTarget, spec: ServiceSpec, result) -> list[tuple[str, str]]:
    """The summary as (field, value) rows."""
    report = result.report or {}
    rows = [
        ("outcome", VERDICTS.get(result.outcome, "ERROR")),
        ("model", f"{target.model} v{target.version}"),
        ("service", f"{spec.namespace}/{spec.name}"),
        ("image", target.storage_uri),
        ("reason", result.reason),
    ]
    if report.get("steps"):
        rows.append(("steps", f"{', '.join(f'{s}%' for s in report['steps'])}; reached {report.get('step_reached')}%"))
    if report.get("intervals"):
        rows.append(("analysed", f"{len(report['intervals'])} interval(s)"))
    rows.append(("exit code", str(result.exit_code)))
    if result.report_paths:
        rows.append(("report", ", ".join(str(path) for _, path in sorted(result.report_paths.items()))))
    return rows


def summary_text(rows: list[tuple[str, str]]) -> str:
    """A block that reads well in a CI log."""
    width = max(len(k) for k, _ in rows)
    bar = "=" * 60
    return "\n".join([bar, *(f"{k:<{width}} : {v}" for k, v in rows), bar])


def summary_markdown(rows: list[tuple[str, str]]) -> str:
    """The same rows as a Markdown table (for ``$GITHUB_STEP_SUMMARY``)."""
    def cell(v: str) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    title = dict(rows).get("outcome", "")
    out = [f"### llmops promote: {title}", "", "| | |", "|---|---|"]
    out += [f"| {cell(k)} | {cell(v)} |" for k, v in rows]
    return "\n".join(out) + "\n"
