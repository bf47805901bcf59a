"""The embedded default: the ``llm-release`` pipeline on one machine, no cluster.

``kfp.local`` runs every step as a subprocess of this Python (caching on, so a
re-run with unchanged inputs reuses the import, fine-tune and evaluation),
MLflow keeps its registry in SQLite under the state folder, images go to the
local ``docker-registry`` when it is installed (else to an OCI layout folder),
and the rollout uses the ``local`` serving backend, whose model servers and
router stay up after the run until ``llmops down``.

State folder layout (default ``./.llmops``)::

    mlflow/      embedded MLflow store (mlflow.db, artifacts/)
    kfp/         pipeline outputs, one folder per run, and the task cache
    registry/    the local image registry (when docker-registry is installed)
    images/      OCI layout when it is not
    serving/     the local serving backend (processes, router, logs)
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

from pipelines.local_services import ensure_local_registry
from pipelines.params import ReleaseParams

log = logging.getLogger(__name__)


class ReleaseStopped(Exception):
    """The release ended before serving the candidate (gate failed, or a step failed)."""


@dataclass(frozen=True)
class LocalRunResult:
    """What one embedded run did."""

    outcome: str  # promoted | rolled_back | gate_failed | error
    message: str  # one line a person reads
    champion: str | None  # version named by the champion alias after the run
    endpoint: str | None  # OpenAI-compatible base URL of the local service
    outputs_dir: Path  # where this run's step outputs (reports, metrics) are
    wall_s: float
    stage_times: dict[str, float]


def state_paths(state_dir: str | Path) -> dict[str, Path]:
    root = Path(state_dir).resolve()
    return {
        "root": root,
        "mlflow": root / "mlflow",
        "kfp": root / "kfp",
        "serving": root / "serving",
        "images": root / "images",
    }


def _kfp_task_args(params: ReleaseParams) -> dict:
    keys = {
        "base_model", "dataset", "model_name", "finetune", "finetune_method", "finetune_steps", "learning_rate",
        "batch_size", "seed", "max_accuracy_drop_points", "max_perplexity_rise_pct", "min_accuracy",
        "traffic_steps", "analysis_interval_s", "min_requests", "max_latency_ratio", "max_error_rate",
        "serving_args",
    }
    floats = {f.name for f in fields(ReleaseParams) if f.type in (float, "float")}
    # KFP checks types strictly: a float parameter given as 3 must arrive as 3.0
    return {k: (float(v) if k in floats else v) for k, v in params.to_dict().items() if k in keys}


class _StageClock(logging.Filter):
    """Times each pipeline step from kfp.local's own log lines (start, finish, cache hit).

    A filter on the root logger, not a handler: kfp.local swaps the root
    logger's handlers while it runs, but leaves its filters alone.
    """

    _ANSI = re.compile(r"\x1b\[[0-9;]*m")

    def __init__(self) -> None:
        super().__init__()
        self.started: dict[str, float] = {}
        self.times: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        self._observe(record)
        return True

    def _observe(self, record: logging.LogRecord) -> None:
        msg = self._ANSI.sub("", record.getMessage())
        if m := re.match(r"Executing task '?([\w-]+)'?", msg):
            self.started[m.group(1)] = record.created
        elif m := re.match(r"Task '?([\w-]+)'? finished with status", msg):
            name = m.group(1)
            if name in self.started:
                self.times[name] = round(record.created - self.started.pop(name), 2)
        elif m := re.match(r"Task ([\w-]+) cache hit", msg):
            self.times[m.group(1)] = 0.0


def run_release(
    params: ReleaseParams,
    state_dir: str | Path = ".llmops",
    *,
    load_rps: float = 8.0,
    cache: bool = True,
) -> LocalRunResult:
    """Run the whole release on this machine.

    Args:
        params: validated before anything runs.
        state_dir: the state folder (see the module docstring).
        load_rps: golden-prompt traffic sent during the canary (nobody else queries a laptop).
        cache: reuse unchanged steps from earlier runs.

    Raises:
        ParamError: a parameter is invalid (nothing ran).
    """
    params.validate()
    from kfp import local

    from model_registry.client import default_tracking_uri
    from pipelines.llm_release import PIPELINE_NAME, llm_release

    paths = state_paths(state_dir)
    for p in paths.values():
        p.mkdir(parents=True, exist_ok=True)
    tracking_uri = default_tracking_uri(paths["mlflow"])
    registry = ensure_local_registry(paths["root"])
    if registry:
        image_repository, insecure = f"{registry}/llmops/{params.model_name}", True
        log.info("images go to the local registry %s", registry)
    else:
        image_repository, insecure = f"oci-layout:{paths['images'] / params.model_name}", False
        log.info("docker-registry is not installed: images go to the OCI layout %s", paths["images"])

    # kfp.local's subprocesses call `python3`: make it this interpreter's environment.
    bin_dir = str(Path(sys.executable).parent)
    if not os.environ.get("PATH", "").startswith(bin_dir + os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(paths["kfp"]),
        enable_caching=cache,
        raise_on_error=True,
    )
    before = {p.name for p in paths["kfp"].iterdir()}
    events_before = len(_history(params.model_name, tracking_uri))
    started = time.monotonic()
    failure: str | None = None
    clock = _StageClock()
    logging.getLogger().addFilter(clock)
    try:
        llm_release(
            **_kfp_task_args(params),
            tracking_uri=tracking_uri,
            image_repository=image_repository,
            image_base="",
            image_insecure=insecure,
            serving_backend="local",
            metrics_provider="scrape",
            namespace="default",
            serving_state_dir=str(paths["serving"]),
            load_rps=load_rps,
        )
    except RuntimeError as exc:
        failure = str(exc)
    finally:
        logging.getLogger().removeFilter(clock)
    wall = time.monotonic() - started
    new_runs = sorted(
        (p for p in paths["kfp"].iterdir() if p.is_dir() and p.name not in before and p.name.startswith(PIPELINE_NAME)),
        key=lambda p: p.stat().st_mtime,
    )
    run_dir = new_runs[-1] if new_runs else None
    champion = _champion(params.model_name, tracking_uri)
    events = _history(params.model_name, tracking_uri)
    endpoint = _endpoint(paths["serving"], params.model_name)
    outputs = run_dir or paths["kfp"]
    if failure is not None:
        gate = _gate_reasons(run_dir)
        if gate is not None:
            return LocalRunResult("gate_failed", gate, champion.version if champion else None, endpoint, outputs, wall,
                                  clock.times)
        return LocalRunResult("error", failure.strip().splitlines()[-1] if failure.strip() else "a step failed",
                              champion.version if champion else None, endpoint, outputs, wall, clock.times)
    new_events = events[events_before:]
    last = new_events[-1] if new_events else None
    outcome = "rolled_back" if last is not None and last.kind == "rollback" else "promoted"
    message = last.reason if last is not None else ""
    return LocalRunResult(outcome, message or outcome, champion.version if champion else None, endpoint, outputs,
                          wall, clock.times)


def _history(name: str, tracking_uri: str) -> list:
    from model_registry import history
    from model_registry.errors import ModelNotFound

    try:
        return history(name, tracking_uri=tracking_uri)
    except ModelNotFound:
        return []


def _champion(name: str, tracking_uri: str):
    from model_registry import get_champion
    from model_registry.errors import ModelNotFound

    try:
        return get_champion(name, tracking_uri=tracking_uri)
    except ModelNotFound:
        return None


def _gate_reasons(run_dir: Path | None) -> str | None:
    """The gate's reasons when this run stopped at the gate, else None."""
    if run_dir is None:
        return None
    for report in run_dir.glob("evaluate*/report*"):
        text = report.read_text(errors="replace")
        if "FAILED" in text.split("## Checks", 1)[0]:
            section = text.split("## Reasons", 1)[-1].split("\n## ", 1)[0]
            reasons = [line.strip()[2:] for line in section.splitlines() if line.strip().startswith("- ")]
            return "; ".join(reasons) or "the gate failed"
    return None


def _endpoint(serving_dir: Path, name: str) -> str | None:
    from serving.backends.base import BackendError
    from serving.backends.local import LocalBackend

    try:
        return LocalBackend(serving_dir).endpoints(name, "default").url + "/openai/v1"
    except BackendError:
        return None
