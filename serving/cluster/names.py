"""Names that cross the cluster boundary, defined once.

Image names, Secret names and keys, mount paths, environment variables and
ServiceAccounts are read by the pipeline (``pipelines/llm_release.py``), the
components, the cluster kit (``serving/cluster/render.py``), the CI workflows
(``ci/``) and ``docs/cluster.md``. Every one of them takes the value from here;
``tests/unit/cluster/test_names_drift.py`` fails when a workflow, the compiled
pipeline or a command in the docs says something else.
"""

from __future__ import annotations

# --- release version and images ------------------------------------------------

VERSION = "0.1.0"  # pyproject's version; CI tags every image with it (and with the commit SHA)
IMAGE_REGISTRY = "ghcr.io/llmops"  # where CI pushes by default (registry/owner)
COMPONENTS_IMAGE_NAME = "llmops-components"  # components/Dockerfile: every pipeline step runs in it
RUNTIME_IMAGE_NAME = "llmops-runtime"  # serving/Dockerfile: the model server (ServingRuntime image)
COMPONENTS_IMAGE = f"{IMAGE_REGISTRY}/{COMPONENTS_IMAGE_NAME}:{VERSION}"
# on the rollout's golden-prompt quality probes: the llmops model server counts such requests in
# llmops_probe_requests_total and leaves them out of the request, latency and TTFT series the canary
# judge compares (20 probes to each arm are a quarter of a 10 % canary's sample, a few % of stable's)
PROBE_HEADER = "x-llmops-probe"
MODEL_VERSION_ENV = "LLMOPS_MODEL_VERSION"  # the predictor's env var naming its registry version (the server's default --model_version)
RUNTIME_IMAGE_REPO = f"{IMAGE_REGISTRY}/{RUNTIME_IMAGE_NAME}"

# --- service accounts -----------------------------------------------------------

PIPELINE_SA = "llmops-pipeline"  # every step of a pipeline run, the rollout step included
ROLLOUT_SA = "llmops-rollout"  # `llmops promote` from CI (its kubeconfig names this account)
PREDICTOR_SA = "llmops-predictor"  # the model-server pods: pull the modelcar, no API token

# --- secrets --------------------------------------------------------------------

MLFLOW_SECRET = "llmops-mlflow"  # generic Secret, exposed as environment variables
MLFLOW_URI_KEY = "MLFLOW_TRACKING_URI"  # required: every MLflow step needs it on a cluster
# Optional credentials (MLflow reads these names): basic auth or a bearer token.
MLFLOW_CREDENTIAL_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")

REGISTRY_PUSH_SECRET = "llmops-registry-push"  # generic Secret holding a Docker config, for the build-image step
REGISTRY_PUSH_KEY = "config.json"  # the file name the image builder reads from DOCKER_CONFIG
DOCKER_CONFIG_DIR = "/var/run/llmops/docker"  # where that Secret is mounted; DOCKER_CONFIG points here
DOCKER_CONFIG_ENV = "DOCKER_CONFIG"

REGISTRY_PULL_SECRET = "llmops-registry-pull"  # kubernetes.io/dockerconfigjson, on the predictor ServiceAccount

HF_SECRET = "llmops-hf"  # generic Secret for gated hf:// models (optional)
HF_TOKEN_KEY = "HF_TOKEN"

# --- in-cluster detection ---------------------------------------------------------

# Kubernetes sets this in every pod; its presence means "running on a cluster".
IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

# --- InferenceService annotations the rollout writes ------------------------------

# KServe copies InferenceService annotations into the Knative revision template
# (predictor.go buildPredictorResources), so these must be on KServe's
# serviceAnnotationDisallowedList or every state write would create a revision.
ROLLOUT_ANNOTATIONS = ("llmops.io/rollout-state", "llmops.io/rollout-lease")

# --- defaults of the pipeline's cluster parameters ---------------------------------

DEFAULT_NAMESPACE = "llmops"
# prometheus-operator names the Service of a Prometheus "prometheus-operated".
DEFAULT_PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc:9090"

# --- Standard-mode predictor Deployments (the canary judge's arms) ------------------


def predictor_deployment(isvc: str, predictor_name: str | None = None) -> str:
    """The Deployment KServe's Standard mode creates for a predictor (or a ``spec.canary[]`` predictor).

    kserve ``pkg/constants/constants.go`` ``PredictorServiceName``: ``{isvc}-{name}-predictor`` when the
    predictor has a ``name``, else ``{isvc}-predictor``. Its pods carry ``app: isvc.<deployment>``
    (``GetRawServiceLabel``, set by ``reconcilers/deployment/deployment_reconciler.go``
    ``createRawDefaultDeployment``), which the kit's PodMonitor turns into the ``revision`` label.
    """
    return f"{isvc}-{predictor_name}-predictor" if predictor_name else f"{isvc}-predictor"


RAW_APP_LABEL_PREFIX = "isvc."  # kserve constants.GetRawServiceLabel: the ``app`` label of a Standard predictor's pods
