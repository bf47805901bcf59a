"""Read the registry: champion, lineage, history, alias resolution, model download."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from model_registry.client import Connection, connect
from model_registry.digest import content_digest
from model_registry.errors import RegistryError, VersionNotFound
from model_registry.registration import all_versions, get_ready_version, is_ready, model_uri, require_model
from model_registry.types import (
    CHAMPION,
    DIGEST_TAG,
    EVENT_TAG_PREFIX,
    MODEL_ARTIFACT_SUBPATH,
    TAG_PREFIX,
    ChampionInfo,
    Event,
    PromotionEvent,
    RegisteredVersion,
)

log = logging.getLogger(__name__)


def _decode(value: str) -> object:
    if value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _version_number(conn: Connection, name: str, version_or_alias: str | int) -> str:
    ref = str(version_or_alias).strip()
    if ref.lower().startswith("v") and ref[1:].isdigit():
        ref = ref[1:]
    if ref.isdigit():
        return ref
    rm = require_model(conn, name)
    if ref == "latest":
        ready = [mv for mv in all_versions(conn, name) if is_ready(mv)]
        if not ready:
            raise VersionNotFound(f"registered model {name!r} has no completely registered version yet")
        return str(ready[0].version)
    alias = ref.lstrip("@")
    aliases = dict(rm.aliases or {})
    if alias not in aliases:
        known = ", ".join(sorted(aliases)) or "none"
        raise VersionNotFound(
            f"registered model {name!r} has no version or alias {ref!r} (aliases: {known}); "
            "pass a version number, 'latest' or an existing alias"
        )
    return str(aliases[alias])


def resolve(name: str, version_or_alias: str | int, tracking_uri: str | None = None) -> RegisteredVersion:
    """Resolve ``"3"``, ``"v3"``, ``"latest"``, ``"champion"`` or ``"@challenger"`` to a version.

    Raises:
        ModelNotFound: no such registered model.
        VersionNotFound: no such version/alias, or the version is not completely registered.
    """
    conn = connect(tracking_uri)
    return _resolve(conn, name, version_or_alias)


def _resolve(conn: Connection, name: str, version_or_alias: str | int) -> RegisteredVersion:
    number = _version_number(conn, name, version_or_alias)
    mv = get_ready_version(conn, name, number)
    return RegisteredVersion(name, str(mv.version), model_uri(name, mv.version), mv.run_id, (mv.tags or {}).get(DIGEST_TAG))


def get_champion(name: str, tracking_uri: str | None = None) -> ChampionInfo | None:
    """The version behind alias ``champion``, or None before the first promotion.

    Raises:
        ModelNotFound: no such registered model.
    """
    conn = connect(tracking_uri)
    rm = require_model(conn, name)
    number = (rm.aliases or {}).get(CHAMPION)
    if number is None:
        return None
    mv = get_ready_version(conn, name, str(number))
    tags = mv.tags or {}
    metrics = _decode(tags.get(TAG_PREFIX + "metrics", "{}"))
    return ChampionInfo(
        name=name,
        version=str(mv.version),
        model_uri=model_uri(name, mv.version),
        metrics={k: float(v) for k, v in metrics.items()} if isinstance(metrics, dict) else {},
        digest=tags.get(DIGEST_TAG),
        image=next((tags[TAG_PREFIX + k] for k in ("image_ref", "image", "image_digest") if tags.get(TAG_PREFIX + k)), None),
        run_id=mv.run_id,
    )


def get_lineage(name: str, version: str | int, tracking_uri: str | None = None) -> dict:
    """Everything recorded about a version.

    Returns:
        The ``llmops.*`` tags without the prefix (JSON values decoded), plus
        ``name``, ``version``, ``model_uri``, ``run_id``, ``source`` (artifact
        source) and ``aliases`` (the aliases pointing at this version).

    Raises:
        ModelNotFound, VersionNotFound: unknown name, version or alias.
    """
    conn = connect(tracking_uri)
    resolved = _resolve(conn, name, version)
    mv = get_ready_version(conn, name, resolved.version)
    rm = require_model(conn, name)
    out: dict = {
        key[len(TAG_PREFIX) :]: _decode(value) for key, value in sorted((mv.tags or {}).items()) if key.startswith(TAG_PREFIX)
    }
    out.update(
        name=name,
        version=resolved.version,
        model_uri=resolved.model_uri,
        run_id=mv.run_id,
        source=mv.source,
        aliases=sorted(a for a, v in (rm.aliases or {}).items() if str(v) == resolved.version),
    )
    return out


def _event_from_tag(key: str, value: str) -> Event | None:
    try:
        data = json.loads(value)
    except ValueError:
        log.warning("ignoring unreadable history tag %s", key)
        return None
    cls = PromotionEvent if data.get("kind") == "promotion" else Event
    fields = {f for f in cls.__dataclass_fields__ if f != "event_id"}
    return cls(event_id=key[len(EVENT_TAG_PREFIX) :], **{k: v for k, v in data.items() if k in fields})


def read_history(conn: Connection, name: str) -> list[Event]:
    rm = require_model(conn, name)
    events = [
        _event_from_tag(key, value) for key, value in sorted((rm.tags or {}).items()) if key.startswith(EVENT_TAG_PREFIX)
    ]
    return [e for e in events if e is not None]


def history(name: str, tracking_uri: str | None = None) -> list[Event]:
    """Promotion and rollback events of ``name``, oldest first.

    Raises:
        ModelNotFound: no such registered model.
    """
    return read_history(connect(tracking_uri), name)


def _download_plain_folder(conn: Connection, name: str, resolved: RegisteredVersion, dst: str) -> str:
    """Fetch sub-path ``model`` of the version through this connection's own store and server."""
    import mlflow.artifacts

    source = conn.client.get_model_version_download_uri(name, resolved.version)
    return mlflow.artifacts.download_artifacts(
        artifact_uri=f"{source.rstrip('/')}/{MODEL_ARTIFACT_SUBPATH}", dst_path=dst, tracking_uri=conn.uri
    )


def download_model(
    name: str,
    version_or_alias: str | int,
    dst: str | Path,
    *,
    tracking_uri: str | None = None,
    verify_digest: bool = True,
) -> Path:
    """Download the plain Hugging Face folder of a version into ``dst`` (created; must not exist).

    Fetches sub-path :data:`MODEL_ARTIFACT_SUBPATH` of ``models:/<name>/<version>``
    and checks its content digest against the one recorded at registration.

    Raises:
        ModelNotFound, VersionNotFound: unknown name, version or alias.
        RegistryError: the artifacts are missing or do not match the recorded digest.
    """
    conn = connect(tracking_uri)
    resolved = _resolve(conn, name, version_or_alias)
    dst = Path(dst)
    if dst.exists():
        raise FileExistsError(f"{dst} exists; pass a new folder")
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".llmops-dl-", dir=dst.parent) as tmp:
        with conn.guard():
            try:
                path = _download_plain_folder(conn, name, resolved, tmp)
            except Exception as exc:
                from model_registry.client import is_unavailable

                if is_unavailable(exc):
                    raise
                raise RegistryError(
                    f"artifacts of {resolved.model_uri} are missing or unreadable ({str(exc).splitlines()[0][:200]}); "
                    "the artifact store lost them: register the model again"
                ) from exc
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise RegistryError(f"artifacts of {resolved.model_uri} hold no config.json under {MODEL_ARTIFACT_SUBPATH}/; register the model again")
        if verify_digest and resolved.digest:
            got = content_digest(folder)
            if got != resolved.digest:
                raise RegistryError(f"downloaded files of {resolved.model_uri} have digest {got}, registered {resolved.digest}; the artifacts were altered")
        shutil.move(str(folder), dst)
    return dst
