"""``llmops manifests``: print or write the cluster kit for one namespace and model."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "manifests",
        help="render the Kubernetes manifests to run llmops on a cluster",
        description=(
            "Render what a platform team applies to run llmops on Kubernetes with KServe: the "
            "llmops-llm ServingRuntime (and, with --cluster-scoped, the ClusterServingRuntime), "
            "ServiceAccounts and least-privilege Roles for pipeline runs and the rollout controller, "
            "a NetworkPolicy, a PodMonitor and, with --storage-uri, the InferenceService. Every object "
            "is validated (Kubernetes schemas, KServe's CRD) before it is printed. See docs/cluster.md."
        ),
    )
    p.add_argument("--namespace", required=True, help="namespace of the pipeline, controller and model")
    p.add_argument("--model", required=True, help="InferenceService name (DNS-1035 label)")
    p.add_argument("--mode", default="serverless", help="serverless (Knative, default) or standard (Gateway API)")
    p.add_argument("--storage-uri", help="model location pinned by digest, e.g. oci://REPO@sha256:...; adds the InferenceService")
    p.add_argument("--runtime-image", help="model-server image pinned by digest (default: a placeholder to replace)")
    p.add_argument("--ingress-namespace", action="append", dest="ingress",
                   help="namespace allowed to call the predictor (repeatable; default depends on --mode)")
    p.add_argument("--prometheus-namespace", default="monitoring", help="namespace Prometheus scrapes from")
    p.add_argument("--serving-runtime", default="llmops",
                   help="model server of the InferenceService: llmops (default), vllm (KServe's kserve-vllmserver) "
                   "or huggingfaceserver (KServe's, vLLM backend on GPUs)")
    p.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu per replica (needs --gpu-node-selector)")
    p.add_argument("--gpu-node-selector", action="append", default=[], metavar="KEY=VALUE",
                   help="node label for GPU nodes, e.g. nvidia.com/gpu.present=true (repeatable)")
    p.add_argument("--min-replicas", type=int, default=1, help="autoscaler lower bound (default 1)")
    p.add_argument("--max-replicas", type=int, default=1, help="autoscaler upper bound (default 1)")
    p.add_argument("--concurrency", type=int, default=8, help="in-flight requests per replica before scaling out")
    p.add_argument("--cluster-scoped", action="store_true", help="also render the ClusterServingRuntime")
    p.add_argument("--out", type=Path, help="write one file per object here (apply order) instead of printing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipelines.cli import CliError
    from serving.cluster.render import PLACEHOLDER_RUNTIME_IMAGE, KitError, KitSpec, render_kit, to_yaml, write_kit
    from serving.cluster.validate import ManifestError, validate_all
    from serving.isvc import IsvcSpecError, PredictorSpec, parse_node_selector

    try:
        selector = parse_node_selector(args.gpu_node_selector, "--gpu-node-selector")
    except IsvcSpecError as exc:
        raise CliError(str(exc)) from None
    tolerations = ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},) if args.gpus else ()
    predictor = PredictorSpec(
        gpus=args.gpus, node_selector=tuple(selector), tolerations=tolerations,
        min_replicas=args.min_replicas, max_replicas=args.max_replicas, scale_target=args.concurrency,
        serving_runtime=args.serving_runtime,
    )
    kit = KitSpec(
        namespace=args.namespace, model=args.model, mode=args.mode,
        runtime_image=args.runtime_image or PLACEHOLDER_RUNTIME_IMAGE,
        ingress_namespaces=tuple(args.ingress) if args.ingress else None,
        prometheus_namespace=args.prometheus_namespace,
        storage_uri=args.storage_uri, predictor=predictor,
    )
    try:
        objs = render_kit(kit, include_cluster_scoped=args.cluster_scoped)
        validate_all(objs)
    except (KitError, ManifestError, IsvcSpecError) as exc:
        raise CliError(str(exc)) from exc
    if args.out:
        for path in write_kit(objs, args.out):
            print(path)
    else:
        print(to_yaml(objs), end="")
    if not args.runtime_image:
        import sys

        print("note: the ServingRuntime image is a placeholder; pass --runtime-image REPO@sha256:...", file=sys.stderr)
    return 0
