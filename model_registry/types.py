"""Results returned by :mod:`model_registry`: plain frozen dataclasses, and the names they use."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

TAG_PREFIX = "llmops."  # every tag llmops writes lives in this namespace
STATUS_TAG = "llmops.status"  # "ready" once a version is completely registered
DIGEST_TAG = "llmops.content_digest"
RUN_ID_TAG = "llmops.pipeline_run_id"
EVENT_TAG_PREFIX = "llmops.event."  # one registered-model tag per promotion/rollback event
CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"
# Sub-path, inside a version's artifacts, of the plain Hugging Face folder.
MODEL_ARTIFACT_SUBPATH = "model"


class _Any:
    """Sentinel: ``promote(expected_champion=ANY)`` skips the champion check."""

    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version."""

    name: str  # registered model name
    version: str  # version number, as MLflow returns it ("3")
    model_uri: str  # "models:/<name>/<version>", loadable with mlflow.pyfunc.load_model
    run_id: str | None  # MLflow run that holds the artifacts, params and metrics
    digest: str | None  # content digest of the Hugging Face folder ("sha256:...")
    created: bool = False  # False when an identical earlier registration was returned


@dataclass(frozen=True)
class ChampionInfo:
    """The version that serves today (alias ``champion``)."""

    name: str  # registered model name
    version: str  # the champion's version number
    model_uri: str  # "models:/<name>/<version>"
    metrics: dict[str, float] = field(default_factory=dict)  # evaluation metrics recorded at registration
    digest: str | None = None  # content digest of its model folder
    image: str | None = None  # OCI image recorded by the build step (llmops.image_ref, else image / image_digest)
    run_id: str | None = None  # registration run


@dataclass(frozen=True)
class Event:
    """A promotion or rollback recorded in a registered model's history."""

    kind: str  # "promotion" or "rollback"
    time: str  # ISO-8601 UTC timestamp
    trigger: str  # who or what caused it: "pipeline", "ci", "manual", "rollout"...
    from_version: str | None  # champion before (promotion) or the version rolled back
    to_version: str | None  # champion after
    reason: str = ""  # free text
    report_url: str | None = None  # link to the evaluation or rollout report
    report: dict | None = None  # small structured report (rollback analysis), if given
    rollout_id: str | None = None  # the rollout that wrote it: a rerun finds it and writes nothing twice
    event_id: str = ""  # tag key suffix; unique and time-ordered

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("event_id")
        return json.dumps(data, sort_keys=True, default=str)


@dataclass(frozen=True)
class PromotionEvent(Event):
    """An :class:`Event` with ``kind == "promotion"``."""
