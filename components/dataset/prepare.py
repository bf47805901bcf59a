"""Resolve a dataset source into local ``train.jsonl`` and ``eval.jsonl`` files."""

from __future__ import annotations

from llmops_core.errors import LlmopsError

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from components.bootstrap.dataset import write_task_dataset

SCHEMES = ("bootstrap://tasks", "local path", "file://", "s3://", "gs://")
_BOOTSTRAP_KEYS = {"train": 4000, "eval": 200, "seed": 0}


class DatasetSourceError(LlmopsError, ValueError):
    """The dataset source cannot be resolved; the message says why and how to fix it."""


@dataclass(frozen=True)
class PreparedDataset:
    """Local copies of the splits and their content hashes."""

    train: Path  # train.jsonl
    eval: Path  # eval.jsonl
    train_sha256: str
    eval_sha256: str
    source: str


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _bootstrap(url, out_dir: Path) -> None:
    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
    unknown = set(query) - set(_BOOTSTRAP_KEYS)
    if url.netloc != "tasks" or url.path not in ("", "/"):
        raise DatasetSourceError(f"unknown bootstrap dataset {url.geturl()!r}; use bootstrap://tasks")
    if unknown:
        raise DatasetSourceError(
            f"unknown option(s) {', '.join(sorted(unknown))} in {url.geturl()!r}; "
            f"known: {', '.join(_BOOTSTRAP_KEYS)}"
        )
    opts = dict(_BOOTSTRAP_KEYS)
    for k, v in query.items():
        try:
            opts[k] = int(v)
        except ValueError:
            raise DatasetSourceError(f"{k}={v!r} in {url.geturl()!r} is not an integer") from None
    if opts["train"] <= 0 or opts["eval"] <= 0:
        raise DatasetSourceError(f"train and eval sizes must be positive in {url.geturl()!r}")
    write_task_dataset(out_dir, train=opts["train"], eval=opts["eval"], test=opts["eval"], seed=opts["seed"])


def _copy_local(folder: Path, out_dir: Path) -> None:
    if not folder.is_dir():
        raise DatasetSourceError(f"dataset folder {folder} does not exist; pass a folder holding train.jsonl and eval.jsonl")
    for name in ("train.jsonl", "eval.jsonl"):
        if not (folder / name).is_file():
            raise DatasetSourceError(f"{folder} has no {name}; a dataset folder holds train.jsonl and eval.jsonl")
        shutil.copyfile(folder / name, out_dir / name)


def _copy_remote(uri: str, out_dir: Path) -> None:
    import fsspec

    scheme = uri.split("://", 1)[0]
    try:
        fs, root = fsspec.core.url_to_fs(uri)
    except ImportError as exc:
        extra = {"s3": "s3", "gs": "gcs"}[scheme]
        raise DatasetSourceError(f"{scheme}:// needs an extra package: pip install 'llmops[{extra}]'") from exc
    for name in ("train.jsonl", "eval.jsonl"):
        remote = f"{root.rstrip('/')}/{name}"
        if not fs.exists(remote):
            raise DatasetSourceError(f"{uri} has no {name}; a dataset folder holds train.jsonl and eval.jsonl")
        fs.get(remote, str(out_dir / name))


def prepare_dataset(source: str, out_dir: str | Path) -> PreparedDataset:
    """Materialise ``source`` as ``out_dir/train.jsonl`` and ``out_dir/eval.jsonl``.

    Args:
        source: see the module docstring for the accepted forms.
        out_dir: destination folder (created).

    Raises:
        DatasetSourceError: unknown scheme (the known ones are listed), missing files.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    url = urlparse(source)
    if url.scheme == "bootstrap":
        _bootstrap(url, out_dir)
    elif url.scheme in ("s3", "gs"):
        _copy_remote(source, out_dir)
    elif url.scheme == "file":
        _copy_local(Path(url.path), out_dir)
    elif url.scheme == "":
        _copy_local(Path(source), out_dir)
    else:
        raise DatasetSourceError(
            f"unknown dataset scheme {url.scheme + '://'!r} in {source!r}; known: {', '.join(SCHEMES)}"
        )
    train, evalf = out_dir / "train.jsonl", out_dir / "eval.jsonl"
    return PreparedDataset(train, evalf, _sha256(train), _sha256(evalf), source)
