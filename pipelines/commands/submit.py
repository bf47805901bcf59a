"""``llmops submit``: upload the compiled release pipeline to Kubeflow Pipelines and start a run.

Talks to the KFP API server with the official ``kfp.Client`` (v2beta1 API):
the pipeline is found by name (``llm-release``) and uploaded when missing,
else the package becomes a new pipeline version (a version whose name exists
already is reused, so a rerun does not pile up versions); then, unless
``--upload-only``, the experiment is found or created and a run started with
the given parameters. Parameter names and values are checked against the
package's inputs before any request.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from pipelines.commands.compile import DEFAULT_PACKAGE
from serving.cluster.names import PIPELINE_SA

TOKEN_ENV = "KFP_TOKEN"
HOST_ENV = "KFP_HOST"
_FIX_HOST = (
    "check --host (the KFP API or UI address, e.g. http://localhost:8080 after "
    "`kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`)"
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submit",
        help="upload the release pipeline to Kubeflow Pipelines and start a run",
        description=(
            "Upload the compiled `llm-release` pipeline (see `llmops compile`) to a Kubeflow Pipelines "
            "server and start a run in an experiment. A pipeline that exists gets a new version "
            "(named after the package's content unless --version-name). Parameters are checked against "
            "the pipeline's inputs before anything is sent. The bearer token comes from $KFP_TOKEN when set. "
            "Exit codes: 0 submitted, 2 error."
        ),
    )
    p.add_argument("--host", default=os.environ.get(HOST_ENV), help="KFP API address, e.g. http://localhost:8080 (default: $KFP_HOST)")
    p.add_argument("--experiment", default=None, help="experiment name (created when missing); required unless --upload-only")
    p.add_argument("--package", type=Path, default=DEFAULT_PACKAGE, help="compiled pipeline YAML (default: pipelines/llm_release.yaml)")
    p.add_argument("--version-name", default=None, help="pipeline version name (default: <pipeline>-<sha256 of the package, 12 hex>)")
    p.add_argument("--run-name", default=None, help="run name (default: <pipeline> <UTC time>)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="pipeline parameter, repeatable (e.g. --param finetune_steps=200)")
    p.add_argument("--upload-only", action="store_true", help="upload the pipeline (version) and start no run")
    p.add_argument("--service-account", default=PIPELINE_SA,
                   help=f"Kubernetes ServiceAccount the run's pods use (default: {PIPELINE_SA}, bound to the kit's pipeline Role; "
                        "empty: the KFP profile's default)")
    p.set_defaults(func=run)


def read_inputs(package: Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """The pipeline name and its input parameters (``{name: {parameterType, defaultValue, description}}``)."""
    import yaml

    from pipelines.cli import CliError

    try:
        docs = list(yaml.safe_load_all(package.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise CliError(f"--package {package}: no such file; run `llmops compile` first") from None
    except (OSError, yaml.YAMLError) as exc:
        raise CliError(f"--package {package}: not a readable KFP pipeline YAML ({exc}); run `llmops compile`") from exc
    spec = docs[0] if docs and isinstance(docs[0], dict) else {}
    name = (spec.get("pipelineInfo") or {}).get("name")
    if not name or "root" not in spec:
        raise CliError(f"--package {package}: not a compiled KFP pipeline (no pipelineInfo/root); run `llmops compile`")
    params = ((spec["root"].get("inputDefinitions") or {}).get("parameters")) or {}
    return name, params


def _coerce(key: str, raw: str, kind: str) -> Any:
    from pipelines.cli import CliError

    try:
        if kind == "NUMBER_INTEGER":
            return int(raw)
        if kind == "NUMBER_DOUBLE":
            return float(raw)
        if kind == "BOOLEAN":
            low = raw.strip().lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return low in ("true", "1", "yes")
        if kind in ("STRUCT", "LIST"):
            return json.loads(raw)
    except ValueError:
        kinds = {"NUMBER_INTEGER": "an integer", "NUMBER_DOUBLE": "a number", "BOOLEAN": "true or false", "STRUCT": "JSON", "LIST": "JSON"}
        raise CliError(f"--param {key}={raw}: {key} takes {kinds[kind]}") from None
    return raw


def parse_params(pairs: list[str], inputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``["k=v", ...]`` -> typed values; unknown names are refused listing the valid ones."""
    from pipelines.cli import CliError

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CliError(f"--param {pair!r}: write KEY=VALUE, e.g. --param finetune_steps=200")
        if key not in inputs:
            raise CliError(f"--param {key}: the pipeline has no parameter {key!r}; valid: {', '.join(sorted(inputs))}")
        if key in out:
            raise CliError(f"--param {key}: given twice")
        out[key] = _coerce(key, raw, inputs[key].get("parameterType", "STRING"))
    return out


def _check_reachable(host: str) -> None:
    import httpx

    from pipelines.cli import CliError

    if not host.startswith(("http://", "https://")):
        raise CliError(f"--host {host!r}: give a URL with a scheme, e.g. http://localhost:8080")
    url = host.rstrip("/") + "/apis/v2beta1/healthz"
    headers = {"Authorization": f"Bearer {os.environ[TOKEN_ENV]}"} if os.environ.get(TOKEN_ENV) else {}
    try:
        resp = httpx.get(url, timeout=10.0, headers=headers)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach Kubeflow Pipelines at {host} ({type(exc).__name__}: {exc}); {_FIX_HOST}") from exc
    if resp.status_code in (401, 403):
        raise CliError(f"Kubeflow Pipelines at {host} refused the request ({resp.status_code}); set ${TOKEN_ENV} to a valid bearer token")
    if resp.status_code >= 400:
        raise CliError(f"{url} answered {resp.status_code}; is {host} a Kubeflow Pipelines API? {_FIX_HOST}")


def _version_id(client, pipeline_id: str, version_name: str) -> str | None:
    flt = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": version_name}]})
    versions = client.list_pipeline_versions(pipeline_id=pipeline_id, filter=flt).pipeline_versions or []
    return versions[0].pipeline_version_id if versions else None


def submit(
    host: str,
    package: Path,
    *,
    experiment: str | None,
    params: dict[str, Any],
    pipeline_name: str,
    version_name: str,
    run_name: str | None = None,
    upload_only: bool = False,
    service_account: str | None = PIPELINE_SA,
) -> dict[str, str]:
    """Upload the package (pipeline or new version) and start a run as ``service_account``; returns the ids."""
    import kfp

    client = kfp.Client(host=host, existing_token=os.environ.get(TOKEN_ENV) or None)
    out: dict[str, str] = {}
    pipeline_id = client.get_pipeline_id(pipeline_name)
    if pipeline_id is None:
        pipeline = client.upload_pipeline(str(package), pipeline_name=pipeline_name,
                                          description="llmops release pipeline (uploaded by llmops submit)")
        pipeline_id = pipeline.pipeline_id
        version_id = _version_id(client, pipeline_id, pipeline_name) or (
            client.list_pipeline_versions(pipeline_id=pipeline_id).pipeline_versions or [None])[0].pipeline_version_id
        out["uploaded"] = "pipeline"
    else:
        version_id = _version_id(client, pipeline_id, version_name)
        if version_id is None:
            version_id = client.upload_pipeline_version(str(package), version_name, pipeline_id=pipeline_id).pipeline_version_id
            out["uploaded"] = "version"
        else:
            out["uploaded"] = "none (version exists)"
    out.update(pipeline_id=pipeline_id, version_id=version_id)
    if upload_only:
        return out
    exp = client.create_experiment(experiment)  # finds it first
    run_name = run_name or f"{pipeline_name} {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())}"
    run = client.run_pipeline(experiment_id=exp.experiment_id, job_name=run_name, params=params,
                              pipeline_id=pipeline_id, version_id=version_id, service_account=service_account or None)
    out.update(experiment_id=exp.experiment_id, run_id=run.run_id, run_name=run_name)
    return out


def run(args: argparse.Namespace) -> int:
    from pipelines.cli import CliError

    if not args.host:
        raise CliError(f"--host is required (or set ${HOST_ENV}), e.g. --host http://localhost:8080; {_FIX_HOST}")
    if not args.upload_only and not args.experiment:
        raise CliError("--experiment NAME is required to start a run (or pass --upload-only)")
    name, inputs = read_inputs(args.package)
    params = parse_params(args.param, inputs)
    digest = hashlib.sha256(args.package.read_bytes()).hexdigest()[:12]
    version_name = args.version_name or f"{name}-{digest}"
    _check_reachable(args.host)
    try:
        ids = submit(args.host, args.package, experiment=args.experiment, params=params, pipeline_name=name,
                     version_name=version_name, run_name=args.run_name, upload_only=args.upload_only,
                     service_account=args.service_account)
    except Exception as exc:  # kfp_server_api.ApiException, urllib3 errors, ValueError from kfp
        import kfp_server_api

        if isinstance(exc, kfp_server_api.ApiException):
            raise CliError(f"Kubeflow Pipelines at {args.host} answered {exc.status} {exc.reason}: {(exc.body or '')[:300]}") from exc
        if isinstance(exc, (ValueError, OSError)) or "urllib3" in type(exc).__module__:
            raise CliError(f"submit to {args.host} failed: {exc}") from exc
        raise
    print(f"pipeline {name}: {ids['uploaded']} uploaded; pipeline {ids['pipeline_id']}, version {ids['version_id']} ({version_name})")
    if "run_id" in ids:
        print(f"run {ids['run_name']!r} started: {ids['run_id']} in experiment {args.experiment} ({ids['experiment_id']}), "
              f"as service account {args.service_account or '(profile default)'}")
        print(f"  {args.host.rstrip('/')}/#/runs/details/{ids['run_id']}")
    return 0
