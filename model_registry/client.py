"""Where the registry lives and how to talk to it.

Tracking URI, in order: the explicit ``tracking_uri`` argument, the
``MLFLOW_TRACKING_URI`` environment variable, else the embedded default: a
SQLite store at ``./.llmops/mlflow/mlflow.db`` with artifacts in
``./.llmops/mlflow/artifacts`` (nothing to start; resolved to an absolute path).

For an HTTP server, MLflow's client retries each request 7 times with
exponential backoff by default (minutes against a dead server). Unless the
user set them, :func:`connect` sets ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=2``,
``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1``, ``MLFLOW_HTTP_REQUEST_BACKOFF_JITTER=0.2``
and ``MLFLOW_HTTP_REQUEST_TIMEOUT=60``, so a dead server fails in seconds with
:class:`~model_registry.errors.RegistryUnavailable` naming the URI and the fix.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmops_core.redact import redact
from model_registry.errors import RegistryError, RegistryUnavailable

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEFAULT_HOME = Path(".llmops") / "mlflow"  # embedded store folder, relative to the working directory
EXPERIMENT_NAME = "llmops"  # experiment holding registration runs
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}


def default_tracking_uri(home: str | Path | None = None) -> str:
    """The tracking URI used when none is given.

    Args:
        home: folder of the embedded store (default ``./.llmops/mlflow``); ignored
            when ``MLFLOW_TRACKING_URI`` is set.

    Returns:
        ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<abs home>/mlflow.db``.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    root = Path(home if home is not None else DEFAULT_HOME).expanduser().resolve()
    return f"sqlite:///{(root / 'mlflow.db').as_posix()}"


def embedded_artifact_root(uri: str) -> Path | None:
    """The artifact folder that goes with a ``sqlite:///`` store (beside the database), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///") :])
    return db.parent / "artifacts"


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


@dataclass
class Connection:
    """An MLflow client bound to one tracking URI (registry URI = tracking URI)."""

    uri: str  # the tracking and registry URI
    client: MlflowClient  # the official client
    _experiment_id: str | None = None

    def guard(self, not_found: Callable[[], RegistryError] | None = None):
        """Context manager translating MLflow/HTTP errors; see :func:`translate_errors`."""
        return translate_errors(self.uri, not_found)

    def experiment_id(self) -> str:
        """Id of the ``llmops`` experiment, created on first use (artifacts beside an embedded store)."""
        if self._experiment_id is None:
            with self.guard():
                exp = self.client.get_experiment_by_name(EXPERIMENT_NAME)
                if exp is None:
                    artifacts = embedded_artifact_root(self.uri)
                    location = artifacts.as_uri() if artifacts else None
                    try:
                        self._experiment_id = self.client.create_experiment(EXPERIMENT_NAME, artifact_location=location)
                    except Exception as exc:  # created concurrently by another process
                        if _error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                            raise
                        self._experiment_id = self.client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id
                else:
                    self._experiment_id = exp.experiment_id
        return self._experiment_id


def connect(tracking_uri: str | None = None) -> Connection:
    """Open the registry at ``tracking_uri`` (or :func:`default_tracking_uri`).

    Creates the embedded store folder if needed and sets fail-fast HTTP retry
    defaults for a remote server (see the module docstring).

    Raises:
        RegistryUnavailable: the embedded store folder cannot be created.
    """
    uri = tracking_uri or default_tracking_uri()
    if is_http(uri):
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
    artifacts = embedded_artifact_root(uri)
    if artifacts is not None:
        try:
            artifacts.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryUnavailable(
                f"cannot create the embedded MLflow store at {artifacts.parent} ({exc}); "
                "make the folder writable or set MLFLOW_TRACKING_URI"
            ) from exc
    from mlflow import MlflowClient

    with translate_errors(uri):
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return Connection(uri=uri, client=client)


def _error_code(exc: BaseException) -> str | None:
    return getattr(exc, "error_code", None)


_CAUSES = (  # (text in the exception, what the user reads)
    ("Connection refused", "connection refused (nothing listens there)"),
    ("Name or service not known", "host name not found"),
    ("nodename nor servname", "host name not found"),
    ("Temporary failure in name resolution", "host name not found"),
    ("timed out", "timed out"),
    ("Max retries exceeded", "no answer after retries"),
)


def unavailable_message(uri: str, cause: object) -> str:
    """One line naming the (redacted) server, the cause and the fix."""
    text = str(cause)
    cause_text = next((short for needle, short in _CAUSES if needle in text), None)
    if cause_text is None:
        cause_text = text.splitlines()[0] if text else type(cause).__name__
        if len(cause_text) > 300:
            cause_text = cause_text[:300] + "..."
    uri = redact(uri)
    if is_http(uri):
        fix = (
            "start the server (e.g. `mlflow server --backend-store-uri sqlite:///mlflow.db --port 5000`), "
            "check MLFLOW_TRACKING_URI, or unset it to use the embedded store in ./.llmops/mlflow"
        )
        return redact(f"MLflow tracking server at {uri} is unreachable or failing: {cause_text}; {fix}")
    return redact(f"MLflow store {uri} cannot be used: {cause_text}; check the path exists and is writable, or set MLFLOW_TRACKING_URI")


def is_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means the server/store cannot be reached or failed (5xx), not a client error."""
    import requests

    if isinstance(exc, (requests.exceptions.RequestException, ConnectionError, TimeoutError)):
        return True
    try:
        import sqlalchemy.exc

        if isinstance(exc, sqlalchemy.exc.OperationalError):
            return True
    except ImportError:  # pragma: no cover - sqlalchemy ships with mlflow
        pass
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        text = str(exc)
        if text.startswith("API request to") or "Max retries exceeded" in text:
            return True
        if _error_code(exc) in {"TEMPORARILY_UNAVAILABLE", "ENDPOINT_NOT_FOUND"}:
            return True
        if exc.__cause__ is not None and is_unavailable(exc.__cause__):
            return True
        status = getattr(exc, "get_http_status_code", lambda: None)()
        # A RestException carries the server's own error code; an INTERNAL_ERROR answer is a 5xx.
        if status and status >= 500 and type(exc).__name__ == "RestException":
            return True
    return False


@contextlib.contextmanager
def translate_errors(uri: str, not_found: Callable[[], RegistryError] | None = None) -> Iterator[None]:
    """Turn MLflow, HTTP and SQL errors into :mod:`model_registry.errors` types.

    Args:
        uri: the tracking URI, named in unavailability messages.
        not_found: builds the error for MLflow's ``RESOURCE_DOES_NOT_EXIST``.
    """
    try:
        yield
    except RegistryError:
        raise
    except Exception as exc:
        if not_found is not None and _error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
            raise not_found() from exc
        if is_unavailable(exc):
            raise RegistryUnavailable(unavailable_message(uri, exc)) from exc
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException):
            raise RegistryError(redact(f"MLflow at {uri} refused the request: {exc}")) from exc
        raise
