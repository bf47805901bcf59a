"""Pick an image builder by name."""

from __future__ import annotations

from enum import Enum

from components.build_image.builders.base import ImageBuilder
from oci_images.errors import ImageBuildError


class BuilderName(str, Enum):
    """Known image builders."""

    OCI = "oci"  # daemonless: distribution API straight to the registry (default)
    DOCKER = "docker"  # a reachable Docker daemon via the docker SDK
    KANIKO = "kaniko"  # in-cluster: renders a kaniko executor step for Kubeflow Pipelines


def make_builder(name: str | BuilderName = BuilderName.OCI, **options) -> ImageBuilder:
    """Create the builder called ``name``.

    Args:
        name: one of :class:`BuilderName`.
        options: passed to the builder's constructor.

    Raises:
        ImageBuildError: unknown name (the message lists the known ones).
        BuilderUnavailable: the builder's prerequisite is missing (raised when building).
    """
    try:
        which = BuilderName(name)
    except ValueError:
        known = ", ".join(b.value for b in BuilderName)
        raise ImageBuildError(f"unknown image builder {name!r}; known builders: {known}") from None
    if which is BuilderName.OCI:
        from components.build_image.builders.oci import OciBuilder

        return OciBuilder(**options)
    if which is BuilderName.DOCKER:
        from components.build_image.builders.docker import DockerBuilder

        return DockerBuilder(**options)
    from components.build_image.builders.kaniko import KanikoBuilder

    return KanikoBuilder(**options)
