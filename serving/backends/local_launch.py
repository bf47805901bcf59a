"""What a local revision runs: the model server's launch spec, read from ``spec.predictor``.

:func:`check_supported` refuses InferenceServices that are valid for KServe but
not runnable on one machine (:class:`LocalSpecError`, naming the field and what
to use instead); :func:`launch_spec` and :func:`resolve_model_dir` turn a
predictor into the folder, version, args and env one model server process starts with.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from serving.backends.base import BackendError
from serving.isvc import DEPLOYMENT_MODE_ANNOTATION, MODEL_FORMAT, DeploymentMode, IsvcSpecError
from serving.cluster.names import MODEL_VERSION_ENV
from serving.runtime.threads import TORCH_THREADS_ENV



class LocalSpecError(BackendError, ValueError):
    """The InferenceService is valid for KServe but the local backend cannot run it."""



def is_image_ref(uri: str) -> bool:
    """Whether ``storageUri`` names a modelcar image rather than a folder."""
    return uri.strip().startswith(("oci://", "oci-layout:"))


def resolve_model_dir(storage_uri: str, base: Path | None = None, pull_cache: Path | None = None) -> Path:
    """Turn ``storageUri`` into a local folder path, pulling a modelcar image into ``pull_cache``.

    Raises:
        LocalSpecError: a remote scheme the local backend cannot read.
    """
    uri = storage_uri.strip()
    if is_image_ref(uri):
        if "@sha256:" not in uri:
            raise LocalSpecError(
                f"spec.predictor.model.storageUri: {storage_uri!r} is not pinned by digest; "
                "use oci://host/repo@sha256:<digest> (what `llmops build-image` prints)"
            )
        digest_hex = uri.rsplit("@sha256:", 1)[1]
        if not re.fullmatch(r"[0-9a-f]{64}", digest_hex):
            raise LocalSpecError(
                f"spec.predictor.model.storageUri: {storage_uri!r} has a malformed digest (sha256: must be "
                "followed by 64 lowercase hex digits); copy the reference `llmops build-image` printed"
            )
        if pull_cache is None:  # validating only: where the pull will land
            return Path(".llmops-models") / digest_hex
        from oci_images.pull import pull_model

        host = uri.removeprefix("oci://").split("/", 1)[0]
        insecure = host.split(":")[0] in ("127.0.0.1", "localhost", "[::1]")
        return pull_model(uri, pull_cache, insecure=insecure)
    if uri.startswith("file://"):
        path = Path(uri[len("file://") :])
    elif "://" in uri:
        scheme = uri.split(":", 1)[0]
        raise LocalSpecError(
            f"spec.predictor.model.storageUri: {storage_uri!r} uses {scheme}:, which the local backend "
            "cannot read; point it at a local model folder (a path or file:///path), e.g. the folder "
            "`llmops bootstrap` or the import step wrote, or use the kserve backend"
        )
    else:
        path = Path(uri)
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return path


@dataclass(frozen=True)
class LaunchSpec:
    """What one revision's model server process is started with."""

    model_dir: Path  # resolved storageUri
    model_version: str  # LLMOPS_MODEL_VERSION, or the revision name when unset
    args: tuple[str, ...]  # spec.predictor.model.args
    env: tuple[tuple[str, str], ...]  # spec.predictor.model.env (literal values)


def launch_spec(predictor: dict[str, Any], revision: str, base: Path | None = None) -> LaunchSpec:
    """Read what the local backend needs from ``spec.predictor``.

    Raises:
        LocalSpecError: the predictor uses something only a cluster can run.
    """
    if predictor.get("containers") or "model" not in predictor:
        raise LocalSpecError(
            "spec.predictor: the local backend runs `model` predictors (modelFormat "
            f"{MODEL_FORMAT!r} with a storageUri); custom containers/images need the kserve backend"
        )
    model = predictor["model"]
    fmt = (model.get("modelFormat") or {}).get("name")
    if fmt != MODEL_FORMAT:
        raise LocalSpecError(
            f"spec.predictor.model.modelFormat.name: {fmt!r} is not served locally; the local backend "
            f"runs the llmops model server, use modelFormat {{name: {MODEL_FORMAT}}}"
        )
    if not model.get("storageUri"):
        raise LocalSpecError("spec.predictor.model.storageUri: required by the local backend (a local model folder)")
    env: list[tuple[str, str]] = []
    for i, item in enumerate(model.get("env") or ()):
        if "value" not in item or item.get("valueFrom"):
            raise LocalSpecError(
                f"spec.predictor.model.env[{i}] ({item.get('name')}): the local backend takes literal "
                "`value`s only (no valueFrom: there are no Secrets or ConfigMaps here)"
            )
        env.append((item["name"], str(item["value"])))
    args = tuple(str(a) for a in model.get("args") or ())
    version = flag_value(args, "--model_version") or dict(env).get(MODEL_VERSION_ENV) or revision
    return LaunchSpec(
        model_dir=resolve_model_dir(model["storageUri"], base),
        model_version=version,
        args=args,
        env=tuple(env),
    )


def flag_value(args: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` in ``args`` (``--flag v`` or ``--flag=v``; the last one wins)."""
    value = None
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(flag + "="):
            value = a.split("=", 1)[1]
    return value


def check_supported(obj: dict[str, Any]) -> None:
    """Refuse InferenceServices the local backend cannot honour (beyond the CRD schema).

    Raises:
        LocalSpecError: naming the field and what to use instead.
    """
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    mode = annotations.get(DEPLOYMENT_MODE_ANNOTATION)
    if mode is not None:
        try:
            parsed = DeploymentMode.parse(mode)
        except IsvcSpecError as exc:
            raise LocalSpecError(f"metadata.annotations[{DEPLOYMENT_MODE_ANNOTATION}]: {exc}") from None
        if parsed is not DeploymentMode.SERVERLESS:
            raise LocalSpecError(
                f"metadata.annotations[{DEPLOYMENT_MODE_ANNOTATION}]: {mode!r}; the local backend "
                "implements Serverless revisions (canaryTrafficPercent, tag routing); set it to "
                "Serverless or use the kserve backend"
            )
    spec = obj.get("spec") or {}
    for comp in ("transformer", "explainer"):
        if spec.get(comp):
            raise LocalSpecError(f"spec.{comp}: not supported by the local backend (predictor only)")
    predictor = spec.get("predictor") or {}
    pct = predictor.get("canaryTrafficPercent")
    # Knative refuses a traffic percent outside 0..100 (serving pkg/apis/serving/v1 TrafficTarget.Validate)
    if pct is not None and (isinstance(pct, bool) or not isinstance(pct, int) or not 0 <= pct <= 100):
        raise LocalSpecError(
            f"spec.predictor.canaryTrafficPercent: {pct!r} is not a whole percent from 0 to 100; "
            "set e.g. 10 for a 10% canary, or remove it to send all traffic to the latest revision"
        )
    launch_spec(predictor, "check")



def server_argv(server_command: Sequence[str], spec: LaunchSpec, model_name: str, host: str, port: int) -> list[str]:
    """The model server command line of one revision: ``server_command``, the backend's flags, the predictor's args."""
    argv = [*server_command, "--model_dir", str(spec.model_dir), "--model_name", model_name]
    if flag_value(spec.args, "--model_version") is None:
        argv += ["--model_version", spec.model_version]
    return argv + ["--http_host", host, "--http_port", str(port), *spec.args]


def server_env(spec: LaunchSpec, revision: str) -> dict[str, str]:
    """The model server's environment: this process's, the predictor's env, and the revision name."""
    env = {**os.environ, **dict(spec.env), "LLMOPS_REVISION": revision}
    env.setdefault(TORCH_THREADS_ENV, "1")  # revisions share this machine: not one thread per core each
    return env
