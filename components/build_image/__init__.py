"""Package a model folder as an OCI image (modelcar or serving image) and publish it.

Public API: :func:`build_image` -> :class:`BuildResult`; builders by name through
:func:`make_builder` (``oci`` daemonless default, ``docker``, ``kaniko``); errors
in :mod:`oci_images.errors`.
"""

from oci_images.auth import Credentials
from components.build_image.build import build_image
from components.build_image.builders.factory import BuilderName, make_builder
from oci_images.errors import (
    AuthError,
    BaseImageNotFound,
    BuilderUnavailable,
    ImageBuildError,
    ModelFolderError,
    RegistryProtocolError,
    RegistryUnreachable,
)
from components.build_image.spec import BuildEvent, BuildResult, BuildSpec, LayerReport, Mode

__all__ = [
    "AuthError", "BaseImageNotFound", "BuildEvent", "BuildResult", "BuildSpec", "BuilderName",
    "BuilderUnavailable", "Credentials", "ImageBuildError", "LayerReport", "Mode", "ModelFolderError",
    "RegistryProtocolError", "RegistryUnreachable", "build_image", "make_builder",
]
