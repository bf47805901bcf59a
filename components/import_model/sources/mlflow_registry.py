"""``models:/name/version`` and ``models:/name@alias`` from the MLflow model registry.

The registry module logs a model folder as an MLflow artifact at
``artifact_path`` (``model`` by default) and registers that artifact; this
source downloads that folder back.
"""

from __future__ import annotations

import re
from pathlib import Path

from components.import_model.errors import SourceUnavailableError
from components.import_model.sources.base import Fetched, FetchOptions, ModelSource, Scheme

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w.-]+))/?$")


def parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """Split ``models:/name/3`` or ``models:/name@alias`` into ``(name, version, alias)``."""
    m = _URI.match(uri)
    if not m:
        raise SourceUnavailableError(
            f"bad MLflow model URI {uri!r}; expected models:/<name>/<version> or models:/<name>@<alias>"
        )
    return m["name"], m["version"], m["alias"]


class MlflowRegistrySource(ModelSource):
    scheme = Scheme.MODELS

    def fetch(self, uri: str, workdir: Path, options: FetchOptions) -> Fetched:
        import mlflow
        from mlflow.exceptions import MlflowException

        from llmops_core.redact import redact
        from model_registry.client import connect
        from model_registry.errors import RegistryError, RegistryUnavailable

        name, version, alias = parse_models_uri(uri)
        what = f"alias {alias!r}" if alias else f"version {version}"
        # connect() sets the fail-fast HTTP retry defaults: a dead server fails in seconds, named
        conn = None
        try:
            conn = connect(options.mlflow_tracking_uri)
            with conn.guard():
                mv = conn.client.get_model_version_by_alias(name, alias) if alias else conn.client.get_model_version(name, version)
        except RegistryUnavailable as exc:
            raise SourceUnavailableError(str(exc)) from exc
        except RegistryError as exc:
            where = redact(conn.uri) if conn else "the MLflow registry"
            raise SourceUnavailableError(
                f"{uri}: not found in the MLflow registry at {where} (no {what} of {name!r}); "
                "check the name and version with `llmops registry history NAME`"
            ) from exc
        dest = workdir / "download"
        dest.mkdir(parents=True)
        sub = options.artifact_path.strip("/")
        try:
            if mv.run_id:
                # The model folder as logged in the run (what the registry module registers).
                path = mlflow.artifacts.download_artifacts(
                    run_id=mv.run_id, artifact_path=sub, dst_path=str(dest), tracking_uri=options.mlflow_tracking_uri
                )
            else:
                path = mlflow.artifacts.download_artifacts(
                    artifact_uri=mv.source, dst_path=str(dest), tracking_uri=options.mlflow_tracking_uri
                )
        except (MlflowException, OSError) as exc:
            raise SourceUnavailableError(
                f"{uri}: cannot download artifact folder {sub!r} of version {mv.version}: {exc}"
            ) from exc
        path = Path(path)
        if not (path / "config.json").exists() and (path / sub / "config.json").exists():
            path = path / sub
        return Fetched(path=path, resolved_revision=f"{name}/{mv.version}")
