"""Register a Hugging Face model folder as a new MLflow model version.

Layout of a registered version (run artifact path ``model``; the version's
source is ``runs:/<run_id>/model``)::

    MLmodel                  pyfunc flavor, loader_module=llmops_hf_pyfunc, data=model
    code/llmops_hf_pyfunc.py the loader (stdlib + transformers; no pickle)
    python_env.yaml, requirements.txt
    model_card.md            the model card (also the version's description)
    model/                   the plain Hugging Face folder, byte-identical to the input:
                             config.json, model.safetensors, tokenizer files ...

so ``mlflow.pyfunc.load_model("models:/<name>/<version>")`` generates text, and
an importer fetches the plain folder at sub-path :data:`MODEL_ARTIFACT_SUBPATH`
(``"model"``) of ``models:/<name>/<version>``, e.g. with :func:`download_model`.

A version is only visible to queries once tagged ``llmops.status=ready``, the
last step of :func:`register_model`; if anything fails after the version is
created it is deleted (or, when the server is gone, left non-ready, skipped by
queries and replaced by the next retry).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from model_registry.card import build_model_card, model_card_from_tags, source_of
from model_registry.client import Connection, connect
from model_registry.digest import content_digest
from model_registry.errors import ModelNotFound, RegistryError, VersionNotFound
from model_registry.lock import LOCK_PREFIX, RegistryLock
from model_registry.types import (
    CHALLENGER,
    DIGEST_TAG,
    MODEL_ARTIFACT_SUBPATH,
    RUN_ID_TAG,
    STATUS_TAG,
    TAG_PREFIX,
    RegisteredVersion,
)
from model_registry.validation import validate_model_folder

log = logging.getLogger(__name__)

LOADER_MODULE = "llmops_hf_pyfunc"
RUN_ARTIFACT_PATH = "model"  # run artifact path of the MLflow model
MAX_DESCRIPTION = 5000  # MLflow's column size for a version description
CLAIM_TTL_S = 60.0  # a registration claim whose holder died is taken over after this long
CLAIM_POLL_S = 0.5  # how often a waiting registration looks again
_TAG_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def validate_name(name: str) -> str:
    """Refuse registered-model names MLflow or llmops cannot use."""
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 200:
        raise ValueError(
            f"invalid registered model name {name!r}: use letters, digits, '.', '_' or '-' "
            "(start with a letter or digit, at most 200 characters)"
        )
    if name.startswith(LOCK_PREFIX):
        raise ValueError(f"registered model names starting with {LOCK_PREFIX!r} are reserved for promotion locks")
    return name


def model_uri(name: str, version: str) -> str:
    return f"models:/{name}/{version}"


def _flatten(data: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, full + "."))
        else:
            out[full] = value
    return out


def _tag_value(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def lineage_tags(tags: Mapping[str, object]) -> dict[str, str]:
    """``{"source_uri": "hf://x"}`` -> ``{"llmops.source_uri": "hf://x"}``; non-strings as JSON."""
    out = {}
    for key, value in tags.items():
        bare = key[len(TAG_PREFIX) :] if key.startswith(TAG_PREFIX) else key
        if not _TAG_KEY.match(bare) or len(bare) > 200:
            raise ValueError(f"invalid lineage key {key!r}: use letters, digits, '_', '.' or '-'")
        if value is None:
            continue
        out[TAG_PREFIX + bare] = _tag_value(value)
    return out


def _check_metrics(metrics: Mapping[str, object]) -> dict[str, float]:
    out = {}
    for key, value in _flatten(metrics).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"metric {key!r} must be a number, got {value!r}; put non-numeric results in lineage")
        out[key] = float(value)
    return out


def code_revision(cwd: str | Path | None = None) -> str | None:
    """``git rev-parse HEAD`` of the working tree (plus ``-dirty``), or None outside git."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}-dirty" if dirty else rev or None


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist in ("mlflow", "transformers", "torch", "tokenizers", "safetensors"):
        try:
            reqs.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:  # pragma: no cover
            reqs.append(dist)
    return reqs


def _stage_mlflow_model(staging: Path, card_md: str, metadata: dict[str, str]) -> None:
    """Write everything of the MLflow model except the Hugging Face folder into ``staging``."""
    import mlflow.pyfunc
    from mlflow.models import Model, ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    code = staging / "code"
    code.mkdir(parents=True)
    shutil.copyfile(Path(__file__).with_name("hf_pyfunc.py"), code / f"{LOADER_MODULE}.py")
    reqs = _requirements()
    (staging / "requirements.txt").write_text("\n".join(reqs) + "\n")
    py = ".".join(map(str, sys.version_info[:3]))
    (staging / "python_env.yaml").write_text(
        f"python: {py}\nbuild_dependencies:\n- pip\ndependencies:\n- -r requirements.txt\n"
    )
    (staging / "model_card.md").write_text(card_md, encoding="utf-8")
    signature = ModelSignature(
        inputs=Schema([ColSpec("string")]),
        outputs=Schema([ColSpec("string")]),
        params=ParamSchema([ParamSpec("max_new_tokens", "long", 16), ParamSpec("temperature", "double", 0.0)]),
    )
    model = Model(signature=signature, metadata=metadata)
    mlflow.pyfunc.add_to_model(
        model, loader_module=LOADER_MODULE, data=MODEL_ARTIFACT_SUBPATH, code="code", python_env="python_env.yaml"
    )
    model.save(str(staging / "MLmodel"))


def ensure_registered_model(conn: Connection, name: str) -> None:
    """Create the registered model if it does not exist ("already exists" is success)."""
    with conn.guard():
        try:
            conn.client.create_registered_model(name, tags={"llmops.managed": "true"})
            log.info("created registered model %s in %s", name, conn.uri)
        except Exception as exc:
            if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                raise


def all_versions(conn: Connection, name: str) -> list:
    """Every version of ``name`` (ready or not), newest first."""
    with conn.guard():
        versions = list(conn.client.search_model_versions(f"name = '{name}'", max_results=10000))
    return sorted(versions, key=lambda mv: int(mv.version), reverse=True)


def is_ready(mv) -> bool:
    return (mv.tags or {}).get(STATUS_TAG) == "ready"


def get_ready_version(conn: Connection, name: str, version: str):
    """The ready :class:`ModelVersion`, or :class:`VersionNotFound` / :class:`ModelNotFound`."""
    require_model(conn, name)
    with conn.guard(lambda: VersionNotFound(f"registered model {name!r} has no version {version!r}")):
        mv = conn.client.get_model_version(name, str(version))
    if not is_ready(mv):
        raise VersionNotFound(
            f"version {version} of {name!r} is not completely registered "
            f"(llmops.status={(mv.tags or {}).get(STATUS_TAG)!r}); register the model again"
        )
    return mv


def require_model(conn: Connection, name: str):
    with conn.guard(lambda: ModelNotFound(f"no registered model named {name!r} in {conn.uri}; register a version first")):
        return conn.client.get_registered_model(name)


def _delete_quietly(conn: Connection, name: str, version: str) -> bool:
    try:
        conn.client.delete_model_version(name, version)
        return True
    except Exception as exc:  # the server may be gone: the version stays non-ready and is skipped
        log.warning("could not delete half-registered version %s/%s: %s", name, version, exc)
        return False


def register_model(
    model_dir: str | Path,
    name: str,
    *,
    params: Mapping[str, object] | None = None,
    metrics: Mapping[str, float] | None = None,
    lineage: Mapping[str, object] | None = None,
    card_md: str | None = None,
    pipeline_run_id: str | None = None,
    tracking_uri: str | None = None,
    claim_wait_s: float = 1800.0,
) -> RegisteredVersion:
    """Register ``model_dir`` as a new version of ``name``.

    The folder is validated, its content digest computed, its files logged in
    a run (with ``params`` and ``metrics``) and registered; lineage goes to
    ``llmops.*`` tags, the model card to the description and ``model_card.md``.
    Idempotent on the content digest and ``pipeline_run_id``: a retry, or any
    number of concurrent callers, get one version; all but its creator get it
    back with ``created=False``. Concurrent callers are serialised by a claim
    (a :class:`~model_registry.lock.RegistryLock` keyed on digest and run id,
    kept alive by a heartbeat, taken over when its holder died); the others wait.

    Args:
        model_dir: Hugging Face folder (config.json, *.safetensors, tokenizer).
        name: registered model name (created if missing).
        params: fine-tuning parameters (logged as run params, nested keys joined with '.').
        metrics: numeric evaluation metrics (logged as run metrics).
        lineage: more ``llmops.*`` tags: ``source_uri``, ``source_revision``,
            ``dataset_sha256``, ``gate_verdict``, ``pipeline_name``, ``code_revision``...
        card_md: model card Markdown; built with :func:`build_model_card` when None.
        pipeline_run_id: the pipeline run registering this version (idempotency key).
        tracking_uri: MLflow tracking URI (default :func:`default_tracking_uri`).
        claim_wait_s: how long to wait for a concurrent registration of the same content.

    Returns:
        The :class:`RegisteredVersion`.

    Raises:
        InvalidModelFolder: the folder fails validation (nothing is written).
        RegistryUnavailable: the server or store cannot be reached.
        ValueError: a bad name, metric or lineage key.
    """
    validate_name(name)
    root = validate_model_folder(model_dir)
    metrics_f = _check_metrics(metrics or {})
    params_flat = {k: _tag_value(v) for k, v in _flatten(params or {}).items()}
    lineage = dict(lineage or {})
    extra_tags = lineage_tags(lineage)
    digest = content_digest(root)
    conn = connect(tracking_uri)
    ensure_registered_model(conn, name)

    claim = RegistryLock(
        conn, claim_resource(name, digest, pipeline_run_id), ttl_s=CLAIM_TTL_S, renew_every_s=CLAIM_TTL_S / 4,
        activity="registration",
    )
    deadline = time.monotonic() + claim_wait_s
    while True:
        found = _existing(conn, name, digest, pipeline_run_id)
        if found is not None:
            return found
        taken, holder = claim.try_acquire()
        if taken:
            break
        if time.monotonic() > deadline:
            raise RegistryError(
                f"{name}: another registration of {digest} (pipeline run {pipeline_run_id or '-'}) is still running "
                f"({claim.describe(holder) if holder else 'contended'}); retry when it is done"
            )
        time.sleep(CLAIM_POLL_S)
    try:
        found = _existing(conn, name, digest, pipeline_run_id, clean_up=True)
        if found is not None:
            return found
        return _register_new(conn, name, root, digest, metrics_f, params, params_flat, lineage, extra_tags,
                             card_md, pipeline_run_id)
    finally:
        try:
            claim.release()
        except RegistryError as exc:  # it expires by itself
            log.warning("could not release registration claim %s: %s", claim.lock_name, exc)


def claim_resource(name: str, digest: str, pipeline_run_id: str | None) -> str:
    """The lock resource that serialises registrations of one content (and pipeline run) of ``name``."""
    key = hashlib.sha256(f"{digest}|{pipeline_run_id or ''}".encode()).hexdigest()[:16]
    return f"{name}.register-{key}"


def _existing(conn: Connection, name: str, digest: str, pipeline_run_id: str | None, *, clean_up: bool = False):
    """The ready version holding ``digest`` for ``pipeline_run_id``; with ``clean_up`` (claim held), delete half-registered ones."""
    for mv in all_versions(conn, name):
        tags = mv.tags or {}
        if tags.get(DIGEST_TAG) == digest and tags.get(RUN_ID_TAG) == (pipeline_run_id or None):
            if is_ready(mv):
                log.info("%s version %s already holds %s (pipeline run %s): reusing it", name, mv.version, digest, pipeline_run_id)
                return RegisteredVersion(name, str(mv.version), model_uri(name, mv.version), mv.run_id, digest, created=False)
            if clean_up:
                log.warning("removing half-registered version %s/%s left by an earlier attempt", name, mv.version)
                with conn.guard():
                    conn.client.delete_model_version(name, str(mv.version))
    return None


def _register_new(conn, name, root, digest, metrics_f, params, params_flat, lineage, extra_tags, card_md, pipeline_run_id):
    """Log the files in a new run and create the version (the caller holds the claim)."""
    tags = {
        TAG_PREFIX + "registered_at": datetime.now(UTC).isoformat(timespec="seconds"),
        TAG_PREFIX + "params": json.dumps(params or {}, sort_keys=True, default=str),
        TAG_PREFIX + "metrics": json.dumps(metrics_f, sort_keys=True),
    }
    revision = lineage.get("code_revision") or code_revision()
    if revision:
        tags[TAG_PREFIX + "code_revision"] = str(revision)
    tags.update(extra_tags)
    tags[DIGEST_TAG] = digest
    if pipeline_run_id:
        tags[RUN_ID_TAG] = pipeline_run_id
    tags[STATUS_TAG] = "registering"

    if card_md is None:
        card_md = build_model_card(
            name,
            source=source_of(lineage),
            source_revision=_str_or_none(lineage.get("source_revision")),
            dataset=_str_or_none(lineage.get("dataset_uri") or lineage.get("dataset")),
            dataset_sha256=_str_or_none(lineage.get("dataset_sha256")),
            params=params,
            metrics=metrics_f,
            champion_metrics=lineage.get("champion_metrics") if isinstance(lineage.get("champion_metrics"), Mapping) else None,
            champion_version=_str_or_none(lineage.get("champion_version")),
            gate_verdict=_str_or_none(lineage.get("gate_verdict")),
            digest=digest,
        )
    description = card_md if len(card_md) <= MAX_DESCRIPTION else card_md[: MAX_DESCRIPTION - 60] + "\n\n(truncated: see model_card.md)\n"

    from mlflow.entities import Metric, Param, RunTag

    with conn.guard():
        run = conn.client.create_run(
            conn.experiment_id(),
            run_name=f"register-{name}",
            tags={"llmops.registered_model": name, **({RUN_ID_TAG: pipeline_run_id} if pipeline_run_id else {})},
        )
    run_id = run.info.run_id
    version: str | None = None
    started = time.monotonic()
    try:
        with conn.guard():
            now_ms = int(time.time() * 1000)
            items = [Param(k, v[:6000]) for k, v in params_flat.items()]
            for i in range(0, len(items), 100):
                conn.client.log_batch(run_id, params=items[i : i + 100])
            mitems = [Metric(k, v, now_ms, 0) for k, v in metrics_f.items() if not math.isnan(v)]
            for i in range(0, len(mitems), 1000):
                conn.client.log_batch(run_id, metrics=mitems[i : i + 1000])
            conn.client.log_batch(run_id, tags=[RunTag(DIGEST_TAG, digest)])
        with tempfile.TemporaryDirectory(prefix="llmops-register-") as tmp:
            staging = Path(tmp) / "mlmodel"
            _stage_mlflow_model(staging, card_md, {"llmops_content_digest": digest, "llmops_registered_model": name})
            with conn.guard():
                log.info("uploading model files of %s (%s) to run %s", name, digest, run_id)
                conn.client.log_artifacts(run_id, str(staging), RUN_ARTIFACT_PATH)
                conn.client.log_artifacts(run_id, str(root), f"{RUN_ARTIFACT_PATH}/{MODEL_ARTIFACT_SUBPATH}")
        with conn.guard():
            mv = conn.client.create_model_version(
                name, source=f"runs:/{run_id}/{RUN_ARTIFACT_PATH}", run_id=run_id, tags=tags, description=description
            )
            version = str(mv.version)
            _verify_artifacts(conn, run_id, root)
            conn.client.set_model_version_tag(name, version, STATUS_TAG, "ready")
            conn.client.set_terminated(run_id, "FINISHED")
    except BaseException:
        if version is not None:
            _delete_quietly(conn, name, version)
        try:
            conn.client.set_terminated(run_id, "FAILED")
        except Exception:  # server gone: the run stays RUNNING; no version points at it
            pass
        raise
    log.info("registered %s version %s (%s) in %.1fs", name, version, digest, time.monotonic() - started)
    return RegisteredVersion(name, version, model_uri(name, version), run_id, digest, created=True)


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _verify_artifacts(conn: Connection, run_id: str, root: Path) -> None:
    """Check the uploaded files are listed where the version points (a lost upload fails here)."""
    listed = {Path(f.path).name for f in conn.client.list_artifacts(run_id, f"{RUN_ARTIFACT_PATH}/{MODEL_ARTIFACT_SUBPATH}")}
    expected = {p.name for p in root.iterdir() if p.is_file()}
    missing = sorted(expected - listed)
    if missing:
        raise RegistryError(f"artifact upload to run {run_id} is incomplete, missing {missing}; register again")
    top = {Path(f.path).name for f in conn.client.list_artifacts(run_id, RUN_ARTIFACT_PATH)}
    if "MLmodel" not in top:
        raise RegistryError(f"artifact upload to run {run_id} is missing MLmodel; register again")


def set_challenger(name: str, version: str | int, tracking_uri: str | None = None) -> None:
    """Point alias ``challenger`` at ``version`` (a version that passed the gate).

    Raises:
        ModelNotFound, VersionNotFound: unknown name or version.
        RegistryUnavailable: the server cannot be reached.
    """
    conn = connect(tracking_uri)
    mv = get_ready_version(conn, name, str(version))
    with conn.guard():
        conn.client.set_registered_model_alias(name, CHALLENGER, mv.version)
    log.info("%s: challenger -> version %s", name, mv.version)


def add_lineage(name: str, version: str | int, tracking_uri: str | None = None, **tags: object) -> dict[str, str]:
    """Add or overwrite ``llmops.*`` tags on a version (image digest, rollout outcome...).

    Args:
        name: registered model name.
        version: version number.
        tracking_uri: MLflow tracking URI.
        **tags: ``key=value``; written as ``llmops.<key>``, non-strings as JSON.

    Returns:
        The tags written (full keys).

    Raises:
        ModelNotFound, VersionNotFound: unknown name or version.
        ValueError: a key MLflow cannot store.
    """
    full = lineage_tags(tags)
    conn = connect(tracking_uri)
    mv = get_ready_version(conn, name, str(version))
    with conn.guard():
        for key, value in full.items():
            conn.client.set_model_version_tag(name, mv.version, key, value)
        # a generated card is the tags in prose: re-render it so it names what was just added (the image
        # digest); a card the user wrote (no "## Source" section) is left alone
        if "\n## Source\n" in (mv.description or ""):
            card = model_card_from_tags(name, str(mv.version), {**(mv.tags or {}), **full})
            if len(card) > MAX_DESCRIPTION:
                card = card[: MAX_DESCRIPTION - 60] + "\n\n(truncated: see model_card.md)\n"
            conn.client.update_model_version(name, mv.version, description=card)
    return full
