"""Shared storage for fine-tune checkpoints and outputs: a local/PVC path, or ``s3://`` / ``gs://`` via fsspec.

A retried KFP task or a restarted TrainJob runs on another pod, so its checkpoints
must outlive the pod. :class:`CheckpointStore` keeps the checkpoint folders the loop
writes (``step-NNNNNNN/`` with ``state.json`` written last as the commit marker) in a
local folder and, for a remote URI, mirrors each one to the bucket and pulls the
newest one back on start. A local path (a mounted PVC) is used in place.

The same fsspec layer as the model importer (:mod:`components.import_model.sources.remote_fs`):
``s3fs`` / ``gcsfs`` are the optional extras ``llmops[s3]`` / ``llmops[gcs]``.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from components.finetune.errors import CheckpointError

log = logging.getLogger(__name__)

STATE_FILE = "state.json"  # written last: a checkpoint folder without it is incomplete
_EXTRA = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}


def is_remote(uri: str | Path) -> bool:
    """True for a URI with a scheme other than ``file://`` (fsspec handles it)."""
    text = str(uri)
    return "://" in text and not text.startswith("file://")


def local_path(uri: str | Path) -> Path:
    """The local path of a plain path or ``file://`` URI."""
    text = str(uri)
    return Path(text[len("file://"):] if text.startswith("file://") else text)


def filesystem(uri: str):
    """The fsspec filesystem and the bare path for ``uri``.

    Raises:
        CheckpointError: the protocol's package is missing (names the extra to install).
    """
    import fsspec

    try:
        return fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        proto = uri.split("://", 1)[0]
        extra = _EXTRA.get(proto, proto)
        raise CheckpointError(f"{uri}: cannot open {proto}:// storage; pip install 'llmops[{extra}]' ({exc})") from exc


def step_of(path: Path | str) -> int:
    return int(str(path).rstrip("/").rsplit("/", 1)[-1][5:])


def local_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint folders under ``root``, oldest first."""
    if not root.exists():
        return []
    return sorted((p for p in root.glob("step-*") if (p / STATE_FILE).exists()), key=step_of)


def upload_dir(src: Path, uri: str, last: str | None = None) -> None:
    """Copy the files of folder ``src`` to ``uri`` (remote or local); ``last`` (a file name) is copied last."""
    if not is_remote(uri):
        dest = local_path(uri)
        staging = dest.parent / f".{dest.name}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(src, staging)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(staging, dest)
        return
    fs, root = filesystem(uri)
    files = sorted(p for p in src.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == last)
    for f in files:
        target = f"{root.rstrip('/')}/{f.relative_to(src).as_posix()}"
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(f), target)


def download_dir(uri: str, dest: Path) -> Path:
    """Copy every file under ``uri`` into ``dest`` (replaced atomically); return ``dest``."""
    staging = dest.parent / f".{dest.name}.download"
    shutil.rmtree(staging, ignore_errors=True)
    if not is_remote(uri):
        shutil.copytree(local_path(uri), staging)
    else:
        fs, root = filesystem(uri)
        root = root.rstrip("/")
        listing = fs.find(root)
        if not listing:
            raise CheckpointError(f"{uri}: no files under this prefix")
        for name in listing:
            rel = name[len(root):].lstrip("/")
            if ".." in Path(rel).parts:
                continue
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(name, str(staging / rel))
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(staging, dest)
    return dest


class CheckpointStore:
    """Where checkpoints live: ``uri`` (path or fsspec URL), with a local working copy.

    Args:
        uri: a local/PVC folder, ``s3://bucket/prefix``, ``gs://bucket/prefix`` (any fsspec URL).
        cache: local folder for the working copy of a remote store (ignored for a local path).
    """

    def __init__(self, uri: str | Path, cache: Path) -> None:
        self.uri = str(uri)
        self.remote = is_remote(self.uri)
        self.root = cache if self.remote else local_path(self.uri)

    def _remote_steps(self) -> list[int]:
        fs, root = filesystem(self.uri)
        try:
            markers = fs.glob(f"{root.rstrip('/')}/step-*/{STATE_FILE}")
        except FileNotFoundError:
            return []
        except Exception as exc:  # fsspec backends raise their own types
            raise CheckpointError(f"{self.uri}: cannot list checkpoints: {exc}") from exc
        return sorted(step_of(m.rsplit("/", 1)[0]) for m in markers)

    def latest(self) -> Path | None:
        """The newest complete checkpoint, pulled into the local copy first for a remote store."""
        if self.remote:
            steps = self._remote_steps()
            if steps:
                name = f"step-{steps[-1]:07d}"
                if not (self.root / name / STATE_FILE).exists():
                    self.root.mkdir(parents=True, exist_ok=True)
                    download_dir(f"{self.uri.rstrip('/')}/{name}", self.root / name)
                    log.info("checkpoint %s/%s pulled to %s", self.uri, name, self.root / name)
        found = local_checkpoints(self.root)
        return found[-1] if found else None

    def publish(self, checkpoint: Path, keep: int) -> None:
        """Mirror a freshly written local checkpoint to the remote store and prune old ones there."""
        if not self.remote:
            return
        base = self.uri.rstrip("/")
        upload_dir(checkpoint, f"{base}/{checkpoint.name}", last=STATE_FILE)
        fs, root = filesystem(self.uri)
        for step in self._remote_steps()[:-keep]:
            fs.rm(f"{root.rstrip('/')}/step-{step:07d}", recursive=True)
        log.info("checkpoint %s published to %s", checkpoint.name, base)
