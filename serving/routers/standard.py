"""Standard (Gateway API) traffic: a ``spec.canary[]`` entry with ``trafficPercent``.

KServe's API doc (``pkg/apis/serving/v1beta1/inference_service.go``, kserve
``aaac4e29``): each canary's ``predictor.name`` names its Deployment
``{isvc}-{name}-predictor``, and "to promote a canary without restart, set
predictor.name to the canary name and remove the canary entry". So the canary
predictor carries a variant name, promotion copies that predictor (name
included) into ``spec.predictor``, and a rollback drops the entry.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from serving.cluster.names import predictor_deployment
from serving.routers.base import CanaryStatus, RollbackPlan, TrafficRouter, condition_reason, observed, predictor_version, strip_canary

CONTAINER_NAME = "kserve-container"  # the CRD requires model.name inside a canary entry


def variant_name(predictor: dict[str, Any], current: dict[str, Any]) -> str:
    """A DNS-label variant name for the canary (``v<version>``), distinct from the stable one's."""
    base = re.sub(r"[^a-z0-9-]+", "-", f"v{predictor_version(predictor) or 'next'}".lower()).strip("-") or "canary"
    return base if base != current.get("name") else f"{base}-b"


class StandardRouter(TrafficRouter):
    name = "standard"

    def comparable(self, predictor):
        out = strip_canary(predictor)
        out.pop("name", None)
        if (out.get("model") or {}).get("name") == CONTAINER_NAME:
            out["model"] = {k: v for k, v in out["model"].items() if k != "name"}
        return out

    def start(self, body, current, new_predictor, weight):
        canary = copy.deepcopy(new_predictor)
        canary["name"] = variant_name(new_predictor, current)
        if "model" in canary:
            canary["model"].setdefault("name", CONTAINER_NAME)
        body["spec"]["predictor"] = current
        body["spec"]["canary"] = [{"predictor": canary, "trafficPercent": weight}]
        return canary

    def set_weight(self, body, state, weight):
        body["spec"]["canary"] = [{"predictor": copy.deepcopy(state.new_predictor), "trafficPercent": weight}]

    def canary_status(self, obj, state):
        from serving.backends.base import PredictorStatus

        ps = PredictorStatus.from_isvc(obj)
        status = obj.get("status") or {}
        if not observed(obj):
            return CanaryStatus(False, "the serving control plane has not observed the latest spec yet", None, None)
        canaries = status.get("canaryStatuses") or []
        if not canaries:
            return CanaryStatus(False, ps.reason or "no canary status reported yet", None, None)
        c = canaries[0]
        # the arms are the two Deployments (their pods' ``revision`` label, see the kit's PodMonitor)
        isvc = (obj.get("metadata") or {}).get("name", "")
        canary_rev = predictor_deployment(isvc, c.get("name"))
        stable_rev = predictor_deployment(isvc, ((obj.get("spec") or {}).get("predictor") or {}).get("name"))
        if not c.get("ready"):
            return CanaryStatus(False, condition_reason(status) or f"canary {c.get('name')} is not ready", canary_rev,
                                stable_rev)
        if int(c.get("trafficPercent", -1)) != state.weight:
            return CanaryStatus(False, f"canary traffic is {c.get('trafficPercent')}%, waiting for {state.weight}%",
                                canary_rev, stable_rev)
        return CanaryStatus(True, None, canary_rev, stable_rev)

    def promote(self, body, state):
        # the canary's predictor, name included, becomes the predictor: its Deployment keeps serving
        body["spec"]["predictor"] = copy.deepcopy(state.new_predictor)
        body["spec"].pop("canary", None)

    def rollback(self, body, state, promoted):
        body["spec"].pop("canary", None)
        body["spec"]["predictor"] = copy.deepcopy(state.prev_predictor)
        return RollbackPlan(finished=True)
