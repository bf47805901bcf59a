"""Reproducible image layers from a folder.

A layer is a tar stream (compressed with gzip unless asked not to) written to a
file whose sha256 is the blob digest; the sha256 of the uncompressed tar is the
``diff_id`` the image config lists. Same folder in, same bytes out:

* entries sorted by path, each directory before its contents;
* every mtime set to ``SOURCE_DATE_EPOCH`` (or 0), owner ``0:0`` with empty
  user/group names, mode ``0644`` for files (``0755`` when any exec bit is set)
  and ``0755`` for folders, so any user in the serving pod can read the model
  (KServe's modelcar links ``/models`` into the serving container, which runs as
  another user);
* gzip with ``mtime=0`` and no file name in its header.

Large files (at least ``split_threshold`` bytes, default 64 MiB) get one layer
each, and the remaining files share one layer, so changing ``config.json``
re-uploads a few kilobytes, not the weights. Files are streamed in 1 MiB
pieces; nothing is read whole into memory.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from oci_images.errors import ModelFolderError

DEFAULT_SPLIT_THRESHOLD = 64 << 20
_BUF = 1 << 20


@dataclass(frozen=True)
class Entry:
    """One thing found in the source folder."""

    rel: str  # posix path relative to the folder
    source: Path  # where to read it (symlinks to files are followed)
    is_dir: bool  # a folder entry
    size: int  # bytes (0 for folders)
    executable: bool  # any exec bit set on the source file


@dataclass(frozen=True)
class Layer:
    """A layer blob written to disk."""

    path: Path  # the blob file (compressed when ``compressed``)
    digest: str  # sha256 of the blob file
    diff_id: str  # sha256 of the uncompressed tar
    size: int  # blob bytes
    compressed: bool  # gzip or plain tar
    files: tuple[str, ...]  # paths inside the image (no leading slash) of the files it holds
    created_by: str  # words for the config's history entry


@dataclass(frozen=True)
class LayerSet:
    """All layers made from one folder, plus a digest of the folder's content."""

    layers: tuple[Layer, ...]
    tree_digest: str  # sha256 over "<file sha256>  <relative path>\n" lines, sorted by path
    file_hashes: dict[str, str] = field(default_factory=dict)  # relative path -> sha256 hex
    total_bytes: int = 0  # bytes of file content


def _key(rel: str) -> tuple[str, ...]:
    return PurePosixPath(rel).parts


def scan_folder(folder: Path) -> list[Entry]:
    """List a folder's files and sub-folders in image order.

    Raises:
        ModelFolderError: the folder is missing, not a folder, holds no file, or holds a
            socket/device/fifo or a symlinked folder.
    """
    folder = Path(folder)
    if not folder.exists():
        raise ModelFolderError(f"model folder {folder} does not exist: pass the folder that holds the model files")
    if not folder.is_dir():
        raise ModelFolderError(f"model path {folder} is a file, not a folder: pass the folder that holds it")
    entries: list[Entry] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        base = Path(dirpath)
        for name in list(dirnames):
            path = base / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                raise ModelFolderError(
                    f"{rel} in {folder} is a symlink to a folder; copy the folder in place (symlinked folders "
                    "are not followed, to keep the image inside the model folder)"
                )
            entries.append(Entry(rel=rel, source=path, is_dir=True, size=0, executable=True))
        for name in filenames:
            path = base / name
            rel = path.relative_to(folder).as_posix()
            try:
                st = path.stat()  # follows symlinks to files (e.g. a Hugging Face snapshot)
            except OSError as exc:
                raise ModelFolderError(f"cannot read {rel} in {folder}: {exc} (a dangling symlink?)") from exc
            if not stat.S_ISREG(st.st_mode):
                raise ModelFolderError(f"{rel} in {folder} is not a regular file; remove it before building")
            if not os.access(path, os.R_OK):
                raise ModelFolderError(f"{rel} in {folder} is not readable by this user; fix its permissions")
            entries.append(
                Entry(rel=rel, source=path, is_dir=False, size=st.st_size, executable=bool(st.st_mode & 0o111))
            )
    if not any(not e.is_dir for e in entries):
        raise ModelFolderError(f"model folder {folder} holds no file: write the model into it first")
    entries.sort(key=lambda e: _key(e.rel))
    return entries


class _HashWriter:
    """Write-through file object that hashes and counts what passes."""

    def __init__(self, sink) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.count = 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.count += len(data)
        self.sink.write(data)
        return len(data)

    def flush(self) -> None:
        self.sink.flush()


class _HashReader:
    def __init__(self, src, progress: Callable[[int], None] | None) -> None:
        self.src = src
        self.sha = hashlib.sha256()
        self.progress = progress

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(min(n, _BUF) if n and n > 0 else _BUF)
        self.sha.update(data)
        if self.progress and data:
            self.progress(len(data))
        return data


def _tarinfo(name: str, *, is_dir: bool, size: int, mode: int, epoch: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.size = 0 if is_dir else size
    info.mode = mode
    info.mtime = epoch
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _parents(path: PurePosixPath) -> list[str]:
    return [p.as_posix() for p in reversed(path.parents) if p.as_posix() != "."]


def write_layer(
    entries: list[Entry],
    target: PurePosixPath,
    out_dir: Path,
    *,
    epoch: int = 0,
    compress: bool = True,
    level: int = 6,
    file_hashes: dict[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
    created_by: str = "",
) -> Layer:
    """Write one layer holding ``entries`` under ``target`` (e.g. ``/models``) into ``out_dir``.

    Folders on the way to each entry (``mnt/``, ``mnt/models/``) are written too, so
    the layer stands alone with the right modes.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f"layer-{os.getpid()}-{id(entries)}.tmp"
    root = PurePosixPath(str(target).lstrip("/"))
    names: list[tuple[str, Entry | None]] = []
    seen: set[str] = set()
    for entry in entries:
        full = root / entry.rel if str(root) not in ("", ".") else PurePosixPath(entry.rel)
        for parent in _parents(full):
            if parent not in seen:
                seen.add(parent)
                names.append((parent, None))
        if full.as_posix() not in seen:
            seen.add(full.as_posix())
            names.append((full.as_posix(), entry))
    names.sort(key=lambda item: _key(item[0]))
    files: list[str] = []
    with open(tmp, "wb") as raw:
        blob = _HashWriter(raw)
        gz = gzip.GzipFile(filename="", mode="wb", fileobj=blob, mtime=0, compresslevel=level) if compress else None
        tar_sink = _HashWriter(gz if gz is not None else blob)
        with tarfile.open(fileobj=tar_sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for name, entry in names:
                if entry is None or entry.is_dir:
                    tar.addfile(_tarinfo(name, is_dir=True, size=0, mode=0o755, epoch=epoch))
                    continue
                mode = 0o755 if entry.executable else 0o644
                with open(entry.source, "rb") as src:
                    reader = _HashReader(src, progress)
                    tar.addfile(_tarinfo(name, is_dir=False, size=entry.size, mode=mode, epoch=epoch), reader)
                    if reader.src.read(1):
                        raise ModelFolderError(f"{entry.rel} grew while it was being packaged; re-run when it is written")
                if file_hashes is not None:
                    file_hashes[entry.rel] = reader.sha.hexdigest()
                files.append(name)
        if gz is not None:
            gz.close()
    digest = "sha256:" + blob.sha.hexdigest()
    final = out_dir / digest.split(":", 1)[1]
    os.replace(tmp, final)
    return Layer(
        path=final,
        digest=digest,
        diff_id="sha256:" + tar_sink.sha.hexdigest(),
        size=blob.count,
        compressed=compress,
        files=tuple(files),
        created_by=created_by,
    )


def build_layers(
    folder: Path,
    target: str,
    out_dir: Path,
    *,
    split_threshold: int = DEFAULT_SPLIT_THRESHOLD,
    epoch: int = 0,
    compress: bool = True,
    level: int = 6,
    progress: Callable[[int], None] | None = None,
) -> LayerSet:
    """Package ``folder`` as layers placing its content under ``target``.

    Args:
        folder: the folder to package.
        target: absolute path inside the image (``/models``, ``/mnt/models``, ``/``).
        out_dir: where the layer blobs are written (named by their hex digest).
        split_threshold: files at least this large get a layer of their own.
        epoch: mtime of every entry (``SOURCE_DATE_EPOCH``).
        compress: gzip the layers (else plain tar).
        level: gzip level (1 fastest .. 9 smallest).
        progress: called with the number of bytes read from the folder, as they are read.

    Returns:
        The layers (large files first in path order, then the rest) and the tree digest.

    Raises:
        ModelFolderError: see :func:`scan_folder`; also ``target`` not absolute.
    """
    if not target.startswith("/"):
        raise ModelFolderError(f"target path {target!r} must be absolute, e.g. /models")
    entries = scan_folder(Path(folder))
    target_path = PurePosixPath(target)
    big = [e for e in entries if not e.is_dir and e.size >= split_threshold]
    rest = [e for e in entries if e.is_dir or e.size < split_threshold]
    hashes: dict[str, str] = {}
    layers: list[Layer] = []
    for entry in big:
        layers.append(
            write_layer([entry], target_path, out_dir, epoch=epoch, compress=compress, level=level,
                        file_hashes=hashes, progress=progress,
                        created_by=f"llmops build-image: COPY {entry.rel} {target_path / entry.rel}")
        )
    if any(not e.is_dir for e in rest) or not big:
        n = sum(1 for e in rest if not e.is_dir)
        layers.append(
            write_layer(rest, target_path, out_dir, epoch=epoch, compress=compress, level=level,
                        file_hashes=hashes, progress=progress,
                        created_by=f"llmops build-image: COPY {n} file(s) {target_path}/")
        )
    tree = hashlib.sha256()
    for rel in sorted(hashes, key=_key):
        tree.update(f"{hashes[rel]}  {rel}\n".encode())
    total = sum(e.size for e in entries if not e.is_dir)
    return LayerSet(layers=tuple(layers), tree_digest="sha256:" + tree.hexdigest(), file_hashes=hashes,
                    total_bytes=total)
