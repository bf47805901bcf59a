"""Pick a serving backend by name.

``make_backend("kserve", namespace=..., api_client=...)`` talks to a cluster;
``make_backend("local", state_dir=...)`` runs everything on this machine.
Heavy SDKs are imported only in the branch that needs them.
"""

from __future__ import annotations

import enum
from typing import Any

from serving.backends.base import ServingBackend


class BackendName(str, enum.Enum):
    """Known serving backends."""

    KSERVE = "kserve"  # Kubernetes API through the official client
    LOCAL = "local"  # model-server processes + a weighted router on this machine

    @classmethod
    def parse(cls, name: "str | BackendName") -> "BackendName":
        """Raises ValueError naming the known backends."""
        if isinstance(name, cls):
            return name
        try:
            return cls(str(name).strip().lower())
        except ValueError:
            known = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown serving backend {name!r}; known backends: {known}") from None


def make_backend(name: "str | BackendName", **options: Any) -> ServingBackend:
    """Build the named backend.

    Args:
        name: ``kserve`` or ``local``.
        **options: passed to the implementation (``kserve``: ``namespace``,
            ``api_client``; ``local``: ``state_dir``, ``server_command``, ...).

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    which = BackendName.parse(name)
    if which is BackendName.KSERVE:
        from serving.backends.kserve import KServeBackend

        return KServeBackend(**options)
    from serving.backends.local import LocalBackend

    return LocalBackend(**options)
