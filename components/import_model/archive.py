"""Safe extraction of ``.tar``, ``.tar.gz``/``.tgz`` and ``.zip`` model archives.

Every entry is checked before anything is written: absolute paths, ``..``
components, links (symbolic or hard) that resolve outside the target, and
device/FIFO entries are refused, so a hostile archive cannot write outside
the extraction folder.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
import zipfile
from pathlib import Path

from components.import_model.errors import UnsafeArchiveError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


def is_archive(path: Path) -> bool:
    """Whether ``path`` is a file with a supported archive suffix."""
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _check_name(archive: Path, name: str) -> str:
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"archive {archive.name}: entry {name!r} has an absolute path; refusing to extract")
    norm = posixpath.normpath(name.replace("\\", "/"))
    if norm == ".." or norm.startswith("../"):
        raise UnsafeArchiveError(f"archive {archive.name}: entry {name!r} escapes the target folder; refusing to extract")
    return norm


def _check_link(archive: Path, name: str, target: str, hard: bool) -> None:
    kind = "hard link" if hard else "symlink"
    if target.startswith("/"):
        raise UnsafeArchiveError(
            f"archive {archive.name}: {kind} {name!r} points to absolute path {target!r}; refusing to extract"
        )
    # Symlink targets are relative to the link's folder, hard link targets to the archive root.
    base = "" if hard else posixpath.dirname(name)
    resolved = posixpath.normpath(posixpath.join(base, target))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchiveError(
            f"archive {archive.name}: {kind} {name!r} points outside the target folder ({target!r}); refusing to extract"
        )


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract ``archive`` into ``dest`` after checking every entry.

    Returns:
        ``dest``.

    Raises:
        UnsafeArchiveError: an entry would land or point outside ``dest``, or the file is not a valid archive.
    """
    dest.mkdir(parents=True, exist_ok=True)
    lower = archive.name.lower()
    try:
        if lower.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_name(archive, info.filename)
                    # Unix mode bits in external_attr: zip symlinks are refused outright.
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise UnsafeArchiveError(
                            f"archive {archive.name}: entry {info.filename!r} is a symlink; refusing to extract"
                        )
                zf.extractall(dest)
        else:
            with tarfile.open(archive, "r:*") as tf:
                members = tf.getmembers()
                for m in members:
                    name = _check_name(archive, m.name)
                    if m.issym() or m.islnk():
                        _check_link(archive, name, m.linkname, hard=m.islnk())
                    elif not (m.isfile() or m.isdir()):
                        raise UnsafeArchiveError(
                            f"archive {archive.name}: entry {m.name!r} is a device or FIFO; refusing to extract"
                        )
                # The 'data' filter re-checks paths and drops unsafe modes (Python >= 3.11.4).
                tf.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile) as exc:
        raise UnsafeArchiveError(f"archive {archive.name} cannot be read: {exc}") from exc
    # Final guard: nothing outside dest after extraction.
    root = os.path.realpath(dest)
    for p in dest.rglob("*"):
        if not os.path.realpath(p).startswith(root + os.sep):
            raise UnsafeArchiveError(f"archive {archive.name}: {p.name} resolves outside the target folder")
    return dest


def model_root(folder: Path) -> Path:
    """The folder holding ``config.json``: ``folder`` itself or its single sub-folder."""
    if (folder / "config.json").exists():
        return folder
    children = [c for c in folder.iterdir() if not c.name.startswith(".")]
    if len(children) == 1 and children[0].is_dir():
        return children[0]
    return folder
