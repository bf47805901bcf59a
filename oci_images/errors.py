"""Errors raised while building and pushing an image.

::

    ImageBuildError                 any failure of an image build; the message names the fix
    ├── RegistryUnreachable         no answer from the registry (address, TLS, server down)
    ├── AuthError                   the registry refused the credentials (or none were given)
    ├── BaseImageNotFound           the base image (or its platform) does not exist
    ├── ModelFolderError            the folder to package is missing, empty or unreadable
    ├── BuilderUnavailable          the chosen builder cannot run here (no daemon, in-cluster only)
    └── RegistryProtocolError       the registry answered something the OCI distribution spec does not allow
"""

from __future__ import annotations

from llmops_core.errors import LlmopsError


class ImageBuildError(LlmopsError):
    """Base class of every image-build failure."""


class RegistryUnreachable(ImageBuildError):
    """The registry did not answer (connection refused, DNS, TLS handshake, timeout)."""


class AuthError(ImageBuildError):
    """The registry answered 401/403: wrong or missing credentials."""


class BaseImageNotFound(ImageBuildError):
    """The base image, or a manifest for the requested platform, does not exist."""


class ModelFolderError(ImageBuildError):
    """The folder to package is missing, empty, or holds entries that cannot be packaged."""


class BuilderUnavailable(ImageBuildError):
    """The chosen builder's prerequisite is missing (Docker daemon, a cluster for kaniko)."""


class RegistryProtocolError(ImageBuildError):
    """The registry answered with a status or body the distribution spec does not allow here."""
