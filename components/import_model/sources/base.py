"""The model source interface: fetch the files a URI names into a local folder."""

from __future__ import annotations

import abc
import fnmatch
from dataclasses import dataclass
from enum import Enum
from pathlib import Path


class Scheme(str, Enum):
    """URI schemes a model can be imported from."""

    LOCAL = "file"  # a plain path (folder or .tar/.tar.gz/.zip archive), or file://
    HF = "hf"  # hf://org/name[@revision], through the Hugging Face cache
    S3 = "s3"  # s3://bucket/prefix (extra: llmops[s3])
    GS = "gs"  # gs://bucket/prefix (extra: llmops[gcs])
    MODELS = "models"  # models:/name/version or models:/name@alias (MLflow registry)
    BOOTSTRAP = "bootstrap"  # bootstrap://tiny or bootstrap://micro (generated, offline)


# Files a Hugging Face model folder needs; weights in safetensors only.
SAFE_PATTERNS: tuple[str, ...] = (
    "*.json",
    "*.safetensors",
    "*.txt",
    "*.model",
    "*.tiktoken",
    "*.jinja",
    "*.md",
    "*.py",  # fetched (never run) so the remote-code check can see them
)
PICKLE_PATTERNS: tuple[str, ...] = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")


def wanted_patterns(allow_pickle: bool) -> list[str]:
    """File-name patterns to fetch from remote sources."""
    return list(SAFE_PATTERNS + (PICKLE_PATTERNS if allow_pickle else ()))


def matches(name: str, patterns: list[str]) -> bool:
    """Whether a relative path's file name matches one of ``patterns``."""
    base = name.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(base, p) for p in patterns)


@dataclass(frozen=True)
class FetchOptions:
    """What a source needs besides the URI."""

    allow_pickle: bool = False  # also fetch pickle weight files
    mlflow_tracking_uri: str | None = None  # models:/ sources: registry to read
    artifact_path: str = "model"  # models:/ sources: artifact folder holding the model


@dataclass(frozen=True)
class Fetched:
    """A fetched model: where its files are and which exact revision they are."""

    path: Path  # folder (or archive file) with the model files
    resolved_revision: str | None  # commit hash, model version, ETag digest... if the source has one
    only: tuple[str, ...] | None = None  # keep only files matching these patterns (cache folders may hold more)


class ModelSource(abc.ABC):
    """Fetches the model a URI names into ``workdir`` (a private scratch folder)."""

    scheme: Scheme

    @abc.abstractmethod
    def fetch(self, uri: str, workdir: Path, options: FetchOptions) -> Fetched:
        """Fetch the model.

        Args:
            uri: the full source URI.
            workdir: an empty folder the source may write into.
            options: flags that change what is fetched.

        Returns:
            Where the files are; may point into a cache (read-only use).

        Raises:
            SourceUnavailableError: the source cannot be read.
        """
