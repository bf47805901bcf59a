"""Serverless (Knative) traffic: ``spec.predictor.canaryTrafficPercent``.

KServe rules followed (kserve/kserve ``aaac4e29``):

* ``reconcilers/knative/ksvc_reconciler.go`` createKnativeService: with
  ``canaryTrafficPercent`` set, the latest revision gets that share and
  ``status...latestRolledoutRevision`` the rest (tag ``prev``); without it the
  latest revision gets 100%.
* ``pkg/apis/serving/v1beta1/inference_service_status.go`` PropagateStatus: the
  latest ready revision at 100% becomes ``latestRolledoutRevision`` (the former
  one ``previousRolledoutRevision``); when a fully rolled-out revision is given
  less than 100% again (its spec unchanged), ``latestRolledoutRevision`` moves
  back to ``previousRolledoutRevision`` — so after promotion a single
  ``canaryTrafficPercent: 0`` sends all traffic back to the previous revision
  without creating a new one.
"""

from __future__ import annotations

import copy
from typing import Any

from serving.routers.base import CanaryStatus, RollbackPlan, TrafficRouter, condition_reason, observed, strip_canary


class ServerlessRouter(TrafficRouter):
    name = "serverless"

    def start(self, body, current, new_predictor, weight):
        body["spec"]["predictor"] = dict(copy.deepcopy(new_predictor), canaryTrafficPercent=weight)
        return new_predictor

    def set_weight(self, body, state, weight):
        body["spec"]["predictor"] = dict(copy.deepcopy(state.new_predictor), canaryTrafficPercent=weight)

    def canary_status(self, obj, state):
        from serving.backends.base import PredictorStatus

        ps = PredictorStatus.from_isvc(obj)
        status = obj.get("status") or {}
        if not observed(obj):
            return CanaryStatus(False, "the serving control plane has not observed the latest spec yet", None, None)
        created = ps.latest_created
        if not created or created == state.stable_revision:
            return CanaryStatus(False, ps.reason or "the canary revision is not created yet", None, state.stable_revision)
        if ps.latest_ready != created:
            return CanaryStatus(False, ps.reason or condition_reason(status) or f"revision {created} is not ready", created,
                                state.stable_revision)
        latest = [t for t in ps.traffic if t.revision == created or t.latest]
        share = sum(t.percent for t in latest) if latest else None
        if share is not None and share != state.weight:
            return CanaryStatus(False, f"traffic to {created} is {share}%, waiting for {state.weight}%", created,
                                state.stable_revision)
        stable = ps.latest_rolledout if ps.latest_rolledout and ps.latest_rolledout != created else state.stable_revision
        return CanaryStatus(True, None, created, stable)

    def promote(self, body, state):
        body["spec"]["predictor"] = copy.deepcopy(state.new_predictor)  # dropping the field gives the latest 100%

    def rollback(self, body, state, promoted):
        if promoted:
            # the new revision is latestRolledoutRevision: 0% on it moves traffic to previousRolledoutRevision
            # (PropagateStatus) in this one write; its spec is restored once the traffic has left
            body["spec"]["predictor"] = dict(strip_canary(body["spec"]["predictor"]), canaryTrafficPercent=0)
        else:
            # canaryTrafficPercent 0 sends everything back to latestRolledoutRevision at once
            body["spec"]["predictor"] = dict(copy.deepcopy(state.prev_predictor), canaryTrafficPercent=0)
        return RollbackPlan(finished=False)

    def finish_rollback(self, obj, state):
        from serving.backends.base import PredictorStatus
        from serving.rollout.state import spec_hash

        ps = PredictorStatus.from_isvc(obj)
        body = copy.deepcopy(obj)
        if spec_hash(strip_canary(obj["spec"]["predictor"])) == state.new_spec_hash and state.new_spec_hash != state.prev_spec_hash:
            # bake rollback, stage 2: once no traffic reaches the new revision, restore the previous spec at 0%
            on_new = sum(t.percent for t in ps.traffic if t.revision == (state.canary_revision or ps.latest_created))
            if not observed(obj) or not ps.traffic or on_new > 0:
                return None, False, "waiting for traffic to return to the previous revision"
            body["spec"]["predictor"] = dict(copy.deepcopy(state.prev_predictor), canaryTrafficPercent=0)
            return body, False, "traffic is back on the previous revision; restoring its spec"
        restored_ready = (
            observed(obj) and ps.latest_created is not None and ps.latest_ready == ps.latest_created
            and ps.latest_created != state.canary_revision
        )
        if not restored_ready:
            return None, False, ps.reason or "waiting for the restored revision"
        body["spec"]["predictor"] = copy.deepcopy(state.prev_predictor)
        return body, True, "restored revision ready"
