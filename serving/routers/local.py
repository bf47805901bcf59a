"""Local traffic: the one-machine backend's weighted router.

The local backend (:mod:`serving.backends.local`) accepts the same InferenceService
YAML and emulates Knative's revisions and ``canaryTrafficPercent`` split, so the
local router writes what the Serverless one writes.
"""

from __future__ import annotations

from serving.routers.serverless import ServerlessRouter


class LocalRouter(ServerlessRouter):
    name = "local"
