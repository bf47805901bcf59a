"""Image references: ``registry/repository[:tag][@sha256:...]`` and ``oci-layout:/dir[:tag]``."""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
LAYOUT_PREFIX = "oci-layout:"

_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_REPO = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


@dataclass(frozen=True)
class ImageRef:
    """A parsed reference to an image in a registry."""

    registry: str  # host[:port] as written (docker.io for Docker Hub)
    repository: str  # path inside the registry, e.g. "library/busybox"
    tag: str | None = None  # tag, when given
    digest: str | None = None  # "sha256:<hex>", when given

    @property
    def api_host(self) -> str:
        """Host the distribution API answers on (Docker Hub's API host differs from its name)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest when pinned, else the tag (default ``latest``)."""
        return self.digest or self.tag or "latest"

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def with_digest(self, digest: str) -> "ImageRef":
        """The same repository pinned to ``digest`` (tag dropped)."""
        return ImageRef(self.registry, self.repository, None, digest)

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


@dataclass(frozen=True)
class LayoutRef:
    """A target OCI image-layout folder on disk (``oci-layout:/path[:tag]``)."""

    path: str  # folder holding (or to hold) index.json, oci-layout, blobs/
    tag: str | None = None  # written as org.opencontainers.image.ref.name

    def __str__(self) -> str:
        return f"{LAYOUT_PREFIX}{self.path}" + (f":{self.tag}" if self.tag else "")


def _looks_like_host(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost"


def parse_image_ref(text: str) -> ImageRef:
    """Parse ``[registry/]repository[:tag][@sha256:...]`` the way Docker does.

    Args:
        text: the reference, e.g. ``127.0.0.1:5000/models/tiny:v1`` or ``busybox``.

    Returns:
        The parsed :class:`ImageRef` (Docker Hub names get ``docker.io`` and ``library/``).

    Raises:
        ValueError: the text is not a valid reference; the message says which part is wrong.
    """
    if not text or text.strip() != text:
        raise ValueError(f"image reference {text!r} is empty or has spaces; write e.g. 'registry:5000/repo/name:tag'")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.match(digest):
            raise ValueError(f"digest {digest!r} in {text!r} is not 'sha256:' followed by 64 lowercase hex digits")
    first, _, remainder = rest.partition("/")
    if remainder and _looks_like_host(first):
        registry, path = first, remainder
    else:
        registry, path = DOCKER_HUB, rest
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
        if not _TAG.match(tag):
            raise ValueError(f"tag {tag!r} in {text!r} is not valid (letters, digits, '_', '.', '-', at most 128)")
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not _REPO.match(path):
        raise ValueError(
            f"repository {path!r} in {text!r} is not valid: use lowercase letters, digits and "
            "'.', '_', '-' separators, with '/' between path parts"
        )
    return ImageRef(registry=registry, repository=path, tag=tag, digest=digest)


def parse_target(text: str) -> ImageRef | LayoutRef:
    """Parse a build target: a registry reference or ``oci-layout:/path/to/dir[:tag]``.

    Raises:
        ValueError: the target is not valid; the message shows the accepted forms.
    """
    if text.startswith(LAYOUT_PREFIX):
        body = text[len(LAYOUT_PREFIX):]
        if not body:
            raise ValueError("target 'oci-layout:' needs a folder: write 'oci-layout:/path/to/dir[:tag]'")
        path, tag = body, None
        head, sep, tail = body.rpartition(":")
        if sep and head and "/" not in tail:
            path, tag = head, tail
            if not _TAG.match(tag):
                raise ValueError(f"tag {tag!r} in {text!r} is not valid (letters, digits, '_', '.', '-')")
        return LayoutRef(path=path, tag=tag)
    ref = parse_image_ref(text)
    if ref.digest:
        raise ValueError(f"target {text!r} is pinned to a digest; push targets take a tag or no tag, not '@sha256:'")
    return ref
