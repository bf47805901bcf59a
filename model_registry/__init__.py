"""llmops' model registry on MLflow: registration, lineage, aliases, promotion history, model card.

A registered version is an MLflow pyfunc model (``mlflow.pyfunc.load_model``
generates text) whose sub-path :data:`MODEL_ARTIFACT_SUBPATH` (``"model"``)
is the plain Hugging Face folder, byte-identical to what was registered:
``mlflow.artifacts.download_artifacts(f"models:/{name}/{version}/model")`` or
:func:`download_model` gives config.json, model.safetensors and the tokenizer
files. Its content digest (:func:`content_digest`) is the tag
``llmops.content_digest``.

Aliases, not stages: ``challenger`` (passed the gate), ``champion`` (moved
only by :func:`promote`), ``previous-champion``. Promotions and rollbacks are
recorded as ``llmops.event.*`` registered-model tags (:func:`history`).

Store: ``tracking_uri`` argument, else ``MLFLOW_TRACKING_URI``, else the
embedded SQLite store in ``./.llmops/mlflow`` (:func:`default_tracking_uri`).

Errors (``model_registry.errors``)::

    RegistryError
    ├── ModelNotFound
    ├── VersionNotFound
    ├── InvalidModelFolder
    ├── RegistryUnavailable
    └── PromotionConflict
"""

from model_registry.card import build_model_card
from model_registry.client import default_tracking_uri
from model_registry.digest import content_digest
from model_registry.errors import (
    InvalidModelFolder,
    ModelNotFound,
    PromotionConflict,
    RegistryError,
    RegistryUnavailable,
    VersionNotFound,
)
from model_registry.promotion import promote, record_rollback
from model_registry.queries import download_model, get_champion, get_lineage, history, resolve
from model_registry.registration import add_lineage, register_model, set_challenger
from model_registry.types import (
    ANY,
    CHALLENGER,
    CHAMPION,
    MODEL_ARTIFACT_SUBPATH,
    PREVIOUS_CHAMPION,
    ChampionInfo,
    Event,
    PromotionEvent,
    RegisteredVersion,
)
from model_registry.validation import validate_model_folder

__all__ = [
    "ANY",
    "CHALLENGER",
    "CHAMPION",
    "MODEL_ARTIFACT_SUBPATH",
    "PREVIOUS_CHAMPION",
    "ChampionInfo",
    "Event",
    "InvalidModelFolder",
    "ModelNotFound",
    "PromotionConflict",
    "PromotionEvent",
    "RegisteredVersion",
    "RegistryError",
    "RegistryUnavailable",
    "VersionNotFound",
    "add_lineage",
    "build_model_card",
    "content_digest",
    "default_tracking_uri",
    "download_model",
    "get_champion",
    "get_lineage",
    "history",
    "promote",
    "record_rollback",
    "register_model",
    "resolve",
    "set_challenger",
    "validate_model_folder",
]
