"""``llmops serve -f isvc.yaml``: run an InferenceService on this machine (local serving backend)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

STATE_DIR_ENV = "LLMOPS_SERVING_DIR"


def default_state_dir() -> Path:
    """``$LLMOPS_SERVING_DIR`` or ``./.llmops/serving``."""
    from serving.backends.local import DEFAULT_STATE_DIR

    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


def add_state_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"local serving state folder (default: ${STATE_DIR_ENV} or ./.llmops/serving)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve an InferenceService YAML locally (model servers + router)",
        description=(
            "Apply a KServe InferenceService manifest to the local serving backend: each predictor "
            "revision runs as a model-server process, a router splits traffic by "
            "canaryTrafficPercent, and the status fields match KServe's. Re-run with an edited "
            "manifest to roll out a new revision; `llmops down` stops everything. storageUri must "
            "be a local folder (a relative path is taken relative to the manifest)."
        ),
    )
    p.add_argument("-f", "--filename", type=Path, required=True, help="InferenceService YAML file")
    add_state_dir(p)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for Ready (default 300)")
    p.add_argument("--no-wait", action="store_true", help="return right after applying")
    p.set_defaults(func=run)


def load_manifest(path: Path) -> dict:
    """Read one InferenceService from a YAML file; relative storageUri paths become absolute.

    Raises:
        CliError: unreadable file, not exactly one InferenceService.
    """
    import yaml

    from pipelines.cli import CliError

    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise CliError(f"{path} is not a YAML text file (not UTF-8 at byte {exc.start}); pass an InferenceService YAML") from exc
    except yaml.YAMLError as exc:
        raise CliError(f"{path} is not valid YAML: {exc}") from exc
    isvcs = [d for d in docs if isinstance(d, dict) and d.get("kind") == "InferenceService"]
    if len(isvcs) != 1 or len(docs) != 1:
        raise CliError(
            f"{path} must hold exactly one InferenceService document (found {len(docs)} document(s), "
            f"{len(isvcs)} InferenceService(s))"
        )
    obj = isvcs[0]
    def mapping(where: str, value: object, example: str) -> dict:
        if not isinstance(value, dict):
            raise CliError(f"{path}: {where} must be a mapping, got {type(value).__name__} {value!r}; e.g. {where}: {example}")
        return value

    meta = mapping("metadata", obj.get("metadata"), "{name: llm}")
    spec = mapping("spec", obj.get("spec"), "{predictor: {model: {...}}}")
    pred = mapping("spec.predictor", spec.get("predictor"), "{model: {modelFormat: {name: llmops-llm}, storageUri: ./model}}")
    mapping("spec.predictor.model", pred.get("model", {}), "{modelFormat: {name: llmops-llm}, storageUri: ./model}")
    if not isinstance(meta.get("name"), str) or not meta.get("name"):
        raise CliError(f"{path}: metadata.name is required (an InferenceService name, e.g. llm)")
    model = obj["spec"]["predictor"].get("model") or {}
    uri = model.get("storageUri")
    if isinstance(uri, str) and uri and "://" not in uri and ":" not in uri.split("/")[0] and not Path(uri).is_absolute():
        model["storageUri"] = str((path.resolve().parent / uri).resolve())
    return obj


def run(args: argparse.Namespace) -> int:
    from pipelines.cli import CliError
    from serving.backends.base import BackendError, PredictorStatus
    from serving.backends.local import LocalBackend
    from serving.isvc import IsvcError

    obj = load_manifest(args.filename)
    backend = LocalBackend(args.state_dir or default_state_dir())
    try:
        applied = backend.apply(obj)
    except (IsvcError, BackendError) as exc:
        raise CliError(str(exc)) from exc
    meta = applied["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    print(f"applied {namespace}/{name} (generation {meta['generation']}, resourceVersion {meta['resourceVersion']})")
    if args.no_wait:
        current = applied
    else:
        current = backend.wait_ready(name, namespace, args.timeout)
    status = PredictorStatus.from_isvc(current)
    endpoints = backend.endpoints(name, namespace)
    print(f"url:     {endpoints.url}")
    if endpoints.latest_url:
        print(f"latest:  {endpoints.latest_url}")
        print(f"prev:    {endpoints.prev_url}")
    for t in status.traffic:
        print(f"traffic: {t.revision} {t.percent}%" + (f" (tag {t.tag})" if t.tag else ""))
    print(f"logs:    {backend.log_path(name, namespace, status.latest_created or 'router').parent}")
    if status.ready:
        print(f"ready:   {status.latest_created}")
        return 0
    if args.no_wait:
        print(f"ready:   not yet ({status.reason})")
        return 0
    raise CliError(f"{namespace}/{name} is not ready: {status.reason or 'timed out after %.0fs' % args.timeout}")
