"""The MLflow tracking URI a pipeline step uses, and the loud failure when a cluster step has none.

On one machine an empty URI means the project's embedded SQLite store. Inside a
pod that store would be a file in the pod, lost with it: the champion step would
always see a first release and registrations would vanish while the run shows
green. So on a cluster (``KUBERNETES_SERVICE_HOST`` is set in every pod) a step
without a URI stops and names the Secret to create.
"""

from __future__ import annotations

import os

from serving.cluster.names import IN_CLUSTER_ENV, MLFLOW_SECRET, MLFLOW_URI_KEY


class MissingTrackingUri(RuntimeError):
    """A pipeline step on a cluster has no MLflow tracking URI."""


def step_tracking_uri(explicit: str = "") -> str | None:
    """The tracking URI for a step: ``explicit``, else ``$MLFLOW_TRACKING_URI``, else None (embedded store).

    Raises:
        MissingTrackingUri: running in a pod with neither (the message names the Secret and key).
    """
    uri = explicit or os.environ.get(MLFLOW_URI_KEY) or ""
    if uri:
        return uri
    if os.environ.get(IN_CLUSTER_ENV):
        raise MissingTrackingUri(
            f"no MLflow tracking URI in this pod: create Secret {MLFLOW_SECRET!r} with key {MLFLOW_URI_KEY} "
            f"in the run's namespace (see docs/cluster.md), or pass the pipeline parameter tracking_uri; "
            "an embedded store inside a pod would lose every registration"
        )
    return None
