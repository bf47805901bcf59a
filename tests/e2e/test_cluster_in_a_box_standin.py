"""The KServe stand-in's revision rules, in seconds (no model server starts: the modelcar pull fails).

KServe copies an InferenceService's annotations into the Knative revision template
(components/predictor.go buildPredictorResources -> reconcilers/knative/ksvc_reconciler.go
createKnativeService), minus serviceAnnotationDisallowedList; Knative makes a revision per template.
So the rollout controller's state annotations create revisions unless the kit's inferenceservice-config
keeps them out — the stand-in must show both.
"""

from __future__ import annotations

import time

import kubernetes
import pytest

from serving.backends.kserve import KServeBackend
from serving.isvc import PredictorSpec, ServiceSpec, render_isvc
from tests.support.cluster_box import kit_annotation_disallowed
from tests.support.kserve_standin import KServeController
from tests.support.kube_emulator import KubeEmulator

pytestmark = pytest.mark.integration

NS = "llmops"
STATE = "llmops.io/rollout-state"


def _wait(kube, pred, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = kube.object("llm", NS)
        if pred(obj):
            return obj
        time.sleep(0.1)
    raise AssertionError(f"timed out: {obj.get('status')}")


def _created(obj) -> str | None:
    return ((obj.get("status") or {}).get("components") or {}).get("predictor", {}).get("latestCreatedRevision")


@pytest.mark.parametrize("disallowed, revisions", [((), 2), (None, 1)], ids=["kserve-defaults", "kit-config"])
def test_state_annotations_make_revisions_unless_the_kit_disallows_them(tmp_path, disallowed, revisions):
    extra = kit_annotation_disallowed() if disallowed is None else disallowed
    with KubeEmulator(NS, tls=True, auto_reconcile=False) as kube, \
            KServeController(kube, tmp_path / "kserve", annotation_disallowed=extra) as ctl:
        backend = KServeBackend(api_client=kubernetes.client.ApiClient(kube.client_configuration()))
        spec = ServiceSpec("llm", NS, PredictorSpec(storage_uri="oci://127.0.0.1:9/none@sha256:" + "a" * 64,
                                                    model_version="1"))
        backend.apply(render_isvc(spec))
        obj = _wait(kube, lambda o: _created(o) == "llm-predictor-00001")
        backend.patch_annotations("llm", NS, {STATE: '{"phase": "x"}'}, obj["metadata"]["resourceVersion"])
        time.sleep(1.0)  # a few reconcile passes
        obj = _wait(kube, lambda o: _created(o) is not None)
        assert _created(obj) == f"llm-predictor-{revisions:05d}", obj["status"]
        # the failed pull is reported the way Knative reports a revision that cannot start
        obj = _wait(kube, lambda o: any(c["type"] == "PredictorReady" and c["status"] == "False"
                                        for c in o["status"]["conditions"]))
        ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False" and "ImagePullBackOff" in ready["message"], ready
        assert ctl.errors == []
