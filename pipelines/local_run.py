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
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TextIO

from pipelines.local_services import ensure_local_registry
from pipelines.params import ReleaseParams
from pipelines.progress import LineTap, StageBoard, StageParser, TaskOutputs

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
    stage_times: dict[str, float]  # seconds per stage label (cache hits 0)
    log_path: Path | None = None  # every line the run printed
    report: Path | None = None  # the release report (HTML)


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
        "load_rps", "serving_args",
    }
    floats = {f.name for f in fields(ReleaseParams) if f.type in (float, "float")}
    # KFP checks types strictly: a float parameter given as 3 must arrive as 3.0
    return {k: (float(v) if k in floats else v) for k, v in params.to_dict().items() if k in keys}


def run_release(
    params: ReleaseParams,
    state_dir: str | Path = ".llmops",
    *,
    cache: bool = True,
    board: StageBoard | None = None,
    log_path: str | Path | None = None,
    echo: TextIO | None = None,
) -> LocalRunResult:
    """Run the whole release on this machine.

    Args:
        params: validated before anything runs.
        state_dir: the state folder (see the module docstring).
        cache: reuse unchanged steps from earlier runs.
        board: receives the stage events (a view subscribes to it); a fresh one when None.
        log_path: every line the run prints (kfp.local, the steps, this process's logging) goes
            there; default ``<state>/logs/run-<time>.log``.
        echo: also copy those lines here (``--verbose``: the terminal).

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
    before: set[str] = set()
    board = board or StageBoard()
    log_file = Path(log_path) if log_path else default_log_path(paths["root"])
    log_file.parent.mkdir(parents=True, exist_ok=True)

    def find_run_dir() -> Path | None:
        return _new_run_dir(paths["kfp"], before, PIPELINE_NAME)

    def task_outputs(task: str) -> TaskOutputs | None:
        rd = find_run_dir()
        return TaskOutputs.from_task_dir(rd / task) if rd is not None and (rd / task).is_dir() else None

    def cache_entry(key: str) -> TaskOutputs | None:
        found = sorted((paths["kfp"] / ".kfp_cache").glob(f"{key}*.json"))
        return TaskOutputs.from_cache_entry(found[0]) if found else None

    parser = StageParser(board, task_outputs, cache_entry, traffic_steps=params.traffic_steps)
    with log_file.open("a", encoding="utf-8", errors="replace") as fh, _tapped(fh, parser.feed, echo):
        log.info("llmops run: the log of every step is %s", log_file)
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
        before.update(p.name for p in paths["kfp"].iterdir())
        events_before = len(_history(params.model_name, tracking_uri))
        started = time.monotonic()
        failure: str | None = None
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
            )
        except RuntimeError as exc:
            failure = str(exc)
            log.error("the pipeline stopped: %s", exc)
        board.finish()
        wall = time.monotonic() - started
        run_dir = find_run_dir()
        champion = _champion(params.model_name, tracking_uri)
        events = _history(params.model_name, tracking_uri)
        endpoint = _endpoint(paths["serving"], params.model_name)
        outputs = run_dir or paths["kfp"]
        if failure is not None:
            gate = _gate_reasons(run_dir)
            rollout_error = _rollout_error(run_dir)
            if gate is not None:
                outcome, message = "gate_failed", gate
            elif rollout_error is not None:
                outcome, message = "error", rollout_error
            else:
                outcome, message = "error", failure.strip().splitlines()[-1] if failure.strip() else "a step failed"
        else:
            new_events = events[events_before:]
            last = new_events[-1] if new_events else None
            outcome = "rolled_back" if last is not None and last.kind == "rollback" else "promoted"
            message = (last.reason if last is not None else "") or outcome
        result = LocalRunResult(outcome, message, champion.version if champion else None, endpoint, outputs, wall,
                                board.times(), log_file)
        report = None
        if run_dir is not None:
            try:
                report = write_release_report(result, board, params, paths, tracking_uri)
            except Exception as exc:  # the release happened; a missing page must not hide its outcome
                log.warning("release report not written: %s", exc, exc_info=True)
    return replace(result, report=report)


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


def _rollout_error(run_dir: Path | None) -> str | None:
    """The rollout's reason when it ended in error (its step succeeds; ``rollout-failed`` stops the run), else None."""
    task_dir = run_dir / "rollout" if run_dir is not None else None
    if task_dir is None or not task_dir.is_dir():
        return None
    outputs = TaskOutputs.from_task_dir(task_dir)
    if outputs.params.get("Output") != "error":
        return None
    from components.rollout.step import record_reason

    return record_reason(outputs.artifacts.get("record")) or "the rollout ended in error (see the canary step in the full log)"


def _endpoint(serving_dir: Path, name: str) -> str | None:
    from serving.backends.base import BackendError
    from serving.backends.local import LocalBackend

    try:
        return LocalBackend(serving_dir).endpoints(name, "default").url + "/openai/v1"
    except BackendError:
        return None


def default_log_path(state_root: Path) -> Path:
    """Where one run's full log goes: ``<state>/logs/run-<local time>.log``."""
    return state_root / "logs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}.log"


def _new_run_dir(kfp_root: Path, before: set[str], pipeline_name: str) -> Path | None:
    new_runs = sorted(
        (p for p in kfp_root.iterdir() if p.is_dir() and p.name not in before and p.name.startswith(pipeline_name)),
        key=lambda p: p.stat().st_mtime,
    )
    return new_runs[-1] if new_runs else None


@contextmanager
def _tapped(log_file: TextIO, on_line: Callable[[str], None], echo: TextIO | None) -> Iterator[LineTap]:
    """Route stdout, stderr and the root logger through one :class:`LineTap` while the pipeline runs.

    kfp.local prints each step's output with ``print`` and installs a root
    handler on ``sys.stdout`` for each task (``kfp/local/logging_utils.py``,
    ``local_logger_context``), so swapping the two streams catches every line.
    """
    tap = LineTap(log_file, on_line, mirror=echo)
    root = logging.getLogger()
    saved = (sys.stdout, sys.stderr, root.handlers[:], root.level)
    handler = logging.StreamHandler(tap)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    sys.stdout = sys.stderr = tap
    root.handlers[:] = [handler]
    root.setLevel(min(root.level, logging.INFO) if root.level else logging.INFO)
    try:
        yield tap
    finally:
        tap.write("\n")
        tap.flush()
        sys.stdout, sys.stderr = saved[0], saved[1]
        root.handlers[:] = saved[2]
        root.setLevel(saved[3])


def write_release_report(result: LocalRunResult, board: StageBoard, params: ReleaseParams, paths: dict[str, Path],
                         tracking_uri: str) -> Path:
    """Gather the run's step outputs, the version's lineage tags and the canary's record into the release report.

    Written as ``report.html`` in the run's folder (next to every step's own outputs).
    """
    from components.release_report import ReleaseFacts, StageLine, render_html

    run_dir = result.outputs_dir

    def outputs(task: str) -> TaskOutputs:
        return TaskOutputs.from_task_dir(run_dir / task) if (run_dir / task).is_dir() else _cached_outputs(
            paths["kfp"], board, task)

    def text(out: TaskOutputs, name: str) -> str:
        path = out.artifacts.get(name)
        return path.read_text(errors="replace") if path is not None and path.is_file() else ""

    dataset, imported, tuned = outputs("prepare-dataset"), outputs("import-model"), outputs("finetune")
    champ_out, evaluated = outputs("champion-metrics"), outputs("evaluate")
    registered, image, rolled = outputs("register"), outputs("build-image-op"), outputs("rollout")
    champion = _json_or_empty(champ_out.params.get("Output"))
    version = str(registered.params.get("Output") or "") or None
    tags = _version_tags(params.model_name, version, tracking_uri) if version else {}

    from model_registry.card import source_of

    lineage = {
        "base model": source_of({k: v for k, v in tags.items()}) or params.base_model,
        "dataset": tags.get("llmops.dataset") or params.dataset,
        "dataset sha256": tags.get("llmops.dataset_sha256") or str(dataset.params.get("Output") or ""),
    }
    manifest = _json_or_empty(_read(imported.artifacts.get("model"), "llmops_manifest.json"))
    if manifest.get("content_digest"):
        lineage["base model digest"] = manifest["content_digest"]
    if manifest.get("resolved_revision"):
        lineage["base model revision"] = manifest["resolved_revision"]
    if tags.get("llmops.content_digest"):
        lineage["model content digest"] = tags["llmops.content_digest"]
    if tags.get("llmops.image_digest"):
        lineage["image digest"] = tags["llmops.image_digest"]
    if version:
        lineage["registered version"] = f"{params.model_name} v{version}"
    counts = {}
    for name, label in (("train", "train"), ("eval_data", "eval")):
        path = dataset.artifacts.get(name)
        if path is not None and path.is_file():
            with path.open("rb") as fh:
                counts[label] = sum(1 for line in fh if line.strip())

    image_ref = str(image.params.get("Output") or "")
    canary, steps, duration = _canary_record(paths["serving"], params.model_name, version)
    stages = tuple(StageLine(r.spec.label, r.state.value, r.elapsed() if r.started is not None else None, r.figure)
                   for r in board.rows.values())
    facts = ReleaseFacts(
        model_name=params.model_name,
        run_name=run_dir.name,
        outcome=result.outcome,
        message=result.message,
        wall_s=result.wall_s,
        stages=stages,
        version=version,
        champion_before=str(champion.get("version")) if champion.get("version") else None,
        champion_after=result.champion,
        lineage=lineage,
        dataset_counts=counts,
        finetune=tuned.metrics(),
        loss_curve_html=text(tuned, "loss_curve"),
        eval_metrics={k: v for k, v in evaluated.metrics().items() if isinstance(v, (int, float))},
        champion_metrics={k: v for k, v in champion.items() if isinstance(v, (int, float))},
        gate_passed=_gate_passed(evaluated),
        eval_report_md=text(evaluated, "report"),
        image_ref=image_ref,
        image_size_bytes=_image_size(paths, image_ref),
        canary_steps=steps or tuple(int(s) for s in params.traffic_steps.split(",") if s.strip()),
        canary=canary,
        canary_duration_s=duration,
        rollout_report_md=text(rolled, "report"),
        log_path=str(result.log_path or ""),
    )
    out = run_dir / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(render_html(facts), encoding="utf-8")
    tmp.replace(out)
    return out


def _read(folder: Path | None, name: str) -> str:
    if folder is None or not (folder / name).is_file():
        return ""
    return (folder / name).read_text(errors="replace")


def _json_or_empty(text: object) -> dict:
    import json

    if not isinstance(text, str) or not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _gate_passed(evaluated: TaskOutputs) -> bool | None:
    value = evaluated.params.get("Output")
    if value is None:
        gp = evaluated.metrics().get("gate_passed")
        return None if gp is None else gp == 1.0
    return value in (True, "true", "True")


def _cached_outputs(kfp_root: Path, board: StageBoard, task: str) -> TaskOutputs:
    """A cache hit has no folder in this run: its outputs are those of the run that made the cache entry."""
    runs = sorted((p for p in kfp_root.iterdir() if p.is_dir() and (p / task / "executor_output.json").exists()),
                  key=lambda p: p.stat().st_mtime)
    return TaskOutputs.from_task_dir(runs[-1] / task) if runs else TaskOutputs({}, {})


def _version_tags(name: str, version: str, tracking_uri: str) -> dict[str, str]:
    from model_registry.client import connect
    from model_registry.errors import RegistryError

    try:
        conn = connect(tracking_uri)
        with conn.guard():
            return dict(conn.client.get_model_version(name, version).tags or {})
    except (RegistryError, Exception):  # a report without tags still shows the steps' own outputs
        return {}


def _image_size(paths: dict[str, Path], image_ref: str) -> int | None:
    """Compressed bytes of the image (config and layers, as its manifest states them), None when unreadable."""
    import json

    if not image_ref or "@sha256:" not in image_ref:
        return None
    try:
        if image_ref.startswith("oci-layout:"):
            root, _, digest = image_ref.removeprefix("oci-layout:").partition("@")
            manifest = json.loads((Path(root) / "blobs" / digest.replace(":", "/")).read_bytes())
        else:
            from oci_images.reference import parse_image_ref
            from oci_images.registry import RegistryClient

            ref = parse_image_ref(image_ref.removeprefix("oci://"))
            with RegistryClient(ref.registry, insecure=ref.registry.startswith(("127.", "localhost"))) as client:
                manifest = json.loads(client.get_manifest(ref).body)
    except Exception as exc:  # the size is a figure on a page; a registry gone since the push must not fail the run
        log.debug("image size of %s not read: %s", image_ref, exc)
        return None
    parts = [manifest.get("config") or {}, *(manifest.get("layers") or [])]
    return sum(int(p.get("size", 0)) for p in parts) or None


def _canary_record(serving_dir: Path, name: str, version: str | None) -> tuple[tuple, tuple[int, ...], float | None]:
    """This version's canary intervals from the rollout state the controller keeps on the InferenceService."""
    if not version:
        return (), (), None
    from serving.backends.base import BackendError
    from serving.backends.local import LocalBackend
    from serving.rollout.state import RolloutState

    try:
        state = RolloutState.from_obj(LocalBackend(serving_dir).get(name, "default"))
    except (BackendError, ValueError, OSError):
        return (), (), None
    if state is None or str(state.target_version) != str(version):
        return (), (), None
    from components.release_report import canary_from_report

    return canary_from_report({"started": state.started, "finished": state.finished,
                               "steps": list(state.steps), "intervals": list(state.intervals)})
