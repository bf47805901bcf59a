"""``llmops promote``: roll a registered model version out on its InferenceService through the canary."""

from __future__ import annotations

import argparse
from pathlib import Path

# rollout flags promote sets itself (from the registry) or redefines
_OWN = {"--storage-uri", "--image", "--model-version", "--registry-model", "--name", "--backend", "-h", "--help"}


def _rollout_parser() -> argparse.ArgumentParser:
    from pipelines.commands import rollout

    parser = argparse.ArgumentParser(add_help=False)
    sub = parser.add_subparsers()
    rollout.register(sub)
    return sub.choices["rollout"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "promote",
        help="promote a registered model version onto its InferenceService through the canary",
        description=(
            "Resolve a model version in MLflow (--version N or --alias challenger), read the OCI image "
            "the pipeline's image step recorded on it, and roll it out on the InferenceService behind the "
            "analysed canary, exactly as `llmops rollout` does (storage URI oci://<image>). "
            "--dry-run prints the plan and the exact change to the InferenceService as a YAML diff and "
            "changes nothing. Every `llmops rollout` flag (steps, interval, analysis, kubeconfig...) applies. "
            "Exit codes: 0 promoted, 1 rolled back, 2 error."
        ),
    )
    what = p.add_argument_group("version")
    what.add_argument("--model", required=True, help="MLflow registered model name")
    what.add_argument("--version", default=None, help="version number to promote")
    what.add_argument("--alias", default=None, help="alias to promote instead of a number, e.g. challenger")
    what.add_argument("--name", default=None, help="InferenceService name (default: the model name)")
    what.add_argument("--backend", default="kserve", help="serving backend: kserve (default) or local")
    what.add_argument("--dry-run", action="store_true", help="print the plan and the InferenceService diff; change nothing")
    what.add_argument("--summary-file", type=Path, default=None,
                      help="append the summary as Markdown to this file (e.g. $GITHUB_STEP_SUMMARY)")
    rollout_group = p.add_argument_group("rollout (as `llmops rollout`)")
    for action in _rollout_parser()._actions:
        if not action.option_strings or set(action.option_strings) & _OWN:
            continue
        rollout_group._add_action(action)
    p.set_defaults(func=run)


def _rollout_namespace(args: argparse.Namespace, target) -> argparse.Namespace:
    """The arguments ``llmops rollout`` would get for this promotion."""
    ns = argparse.Namespace(**vars(args))
    ns.name = args.name or args.model
    ns.storage_uri, ns.image = target.storage_uri, None
    ns.model_version = target.version
    ns.registry_model = args.model
    if ns.report_dir is None:
        ns.report_dir = Path("rollout-reports") / f"{ns.name}-v{target.version}"
    return ns


def run(args: argparse.Namespace) -> int:
    from model_registry import RegistryError
    from pipelines import promote as lib
    from pipelines.cli import CliError
    from pipelines.commands.rollout import (
        build_backend, build_metrics, build_probe_traffic, build_quality, build_strategy, default_holder, golden_prompts, node_selector,
        openai_base, service_account, start_load,
    )
    from serving.backends.base import BackendError
    from serving.isvc import IsvcError
    from serving.rollout.controller import RolloutError
    from serving.rollout.hooks import MlflowHooks
    from serving.rollout.runner import RolloutResult, print_progress

    try:
        target = lib.resolve_target(args.model, args.version, args.alias, tracking_uri=args.tracking_uri)
    except (lib.PromoteError, RegistryError) as exc:
        raise CliError(str(exc)) from exc
    ns = _rollout_namespace(args, target)
    try:
        spec = lib.service_spec(
            target, ns.name, ns.namespace, deployment_mode=ns.deployment_mode, cpu=ns.cpu, memory=ns.memory,
            predictor_args=tuple(ns.predictor_arg), service_account=service_account(ns), gpus=ns.gpus,
            node_selector=node_selector(ns),
        )
    except (IsvcError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    strategy = build_strategy(ns)
    backend = build_backend(ns)

    if args.dry_run:
        try:
            change = lib.plan_change(backend, spec, strategy)
        except (BackendError, IsvcError) as exc:
            raise CliError(str(exc)) from exc
        print(lib.plan_text(target, spec, strategy))
        print()
        if change.creates:
            print(f"inferenceservice {spec.namespace}/{spec.name} does not exist; it would be created "
                  f"with v{target.version} serving all traffic (first deployment, no canary):")
        else:
            print(f"change to inferenceservice {spec.namespace}/{spec.name} (first canary step; "
                  "the rollout state is also recorded in llmops.io/rollout-* annotations):")
        print(change.diff, end="" if change.diff.endswith("\n") else "\n")
        print("dry run: nothing was changed")
        if args.summary_file:
            _append(args.summary_file, f"### llmops promote (dry run): {target.model} v{target.version}\n\n"
                    f"```\n{lib.plan_text(target, spec, strategy)}\n```\n\n```diff\n{change.diff}```\n")
        return 0

    metrics = build_metrics(ns)
    model_name = ns.model_name or ns.name
    prompts = golden_prompts(ns)
    quality = build_quality(ns, prompts, model_name)

    load = start_load(backend, ns, model_name, prompts) if ns.load_rps > 0 else None
    holder = ns.holder or default_holder()
    from pipelines.progress import status_line

    try:
        with status_line("promote"):
            result = lib.promote(
                target, backend, spec, strategy, metrics, quality=quality,
                probe_traffic=build_probe_traffic(prompts, model_name, openai_base(ns)),
                hooks=MlflowHooks(args.model, ns.tracking_uri), holder=holder, model_name=model_name,
                report_dir=ns.report_dir, max_duration_s=ns.timeout, on_outcome=print_progress(),
            )
    except (RolloutError, BackendError, IsvcError) as exc:
        result = RolloutResult(outcome="error", reason=str(exc))
    finally:
        if load is not None:
            load.stop()
    report_summary(target, spec, result, args.summary_file)
    return result.exit_code


def report_summary(target, spec, result, summary_file: Path | None) -> None:
    """Print the CI summary block; append it as Markdown to ``summary_file``."""
    from pipelines import promote as lib

    rows = lib.summary_lines(target, spec, result)
    print(lib.summary_text(rows))
    if summary_file:
        _append(summary_file, lib.summary_markdown(rows))


def _append(path: Path, text: str) -> None:
    from pipelines.cli import CliError

    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    except OSError as exc:
        raise CliError(f"--summary-file {path}: cannot append ({exc})") from exc
