"""Choose the traffic router for an InferenceService's deployment mode."""

from __future__ import annotations

import enum

from serving.routers.base import TrafficRouter


class RouterName(str, enum.Enum):
    SERVERLESS = "serverless"
    STANDARD = "standard"
    LOCAL = "local"


_BY_MODE = {"serverless": RouterName.SERVERLESS, "standard": RouterName.STANDARD, "rawdeployment": RouterName.STANDARD}


def make_router(name: "str | RouterName") -> TrafficRouter:
    """The router for ``name``: a router name (serverless, standard, local) or a KServe deployment mode.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    raw = name.value if isinstance(name, enum.Enum) else str(name)
    key = raw.strip().lower()
    which = _BY_MODE.get(key) or next((r for r in RouterName if r.value == key), None)
    if which is None:
        known = ", ".join(r.value for r in RouterName)
        raise ValueError(f"unknown traffic router {raw!r}; known: {known} (or a deployment mode: Serverless, Standard)")
    if which is RouterName.STANDARD:
        from serving.routers.standard import StandardRouter

        return StandardRouter()
    if which is RouterName.LOCAL:
        from serving.routers.local import LocalRouter

        return LocalRouter()
    from serving.routers.serverless import ServerlessRouter

    return ServerlessRouter()
