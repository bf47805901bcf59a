"""``llmops run``: the whole release on this machine (the embedded default)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.params import ReleaseParams


def _local(uri: str) -> Path | None:
    """The local path a model or dataset argument names, or None for a URI scheme."""
    if "://" in uri or uri.startswith("models:/"):
        return None
    return Path(uri).expanduser()


def preflight(params: ReleaseParams, state_dir: Path) -> None:
    """Check the inputs and the tracking server before any step runs (nothing is written on failure).

    Raises:
        CliError: a missing, corrupt or pickle-only base model folder, a dataset
            folder without valid train.jsonl/eval.jsonl, an unreachable MLFLOW_TRACKING_URI.
    """
    import os

    from components.finetune.errors import DatasetError
    from model_registry.errors import InvalidModelFolder, RegistryError
    from pipelines.cli import CliError

    model = _local(params.base_model)
    if model is not None:
        from model_registry.validation import validate_model_folder

        if not model.exists():
            raise CliError(f"--base-model {params.base_model}: no such folder or archive; pass a model folder, "
                           "an archive, hf://org/name or bootstrap://tiny")
        if model.is_dir():
            try:
                validate_model_folder(model)
            except InvalidModelFolder as exc:
                raise CliError(f"--base-model: {exc} (`llmops import` with --allow-pickle converts pickle weights)") from None
    data = _local(params.dataset)
    if data is not None:
        from components.finetune.data import read_records

        if not data.is_dir():
            raise CliError(f"--dataset {params.dataset}: not a folder; pass a folder holding train.jsonl and eval.jsonl, "
                           "or bootstrap://tasks")
        for name in ("train.jsonl", "eval.jsonl"):
            try:
                read_records(data / name)
            except DatasetError as exc:
                raise CliError(f"--dataset: {exc}") from None
    if os.environ.get("MLFLOW_TRACKING_URI", "").strip():
        from model_registry.client import connect

        try:
            conn = connect()
            with conn.guard():
                conn.client.search_registered_models(max_results=1)
        except RegistryError as exc:
            raise CliError(f"{exc} (MLFLOW_TRACKING_URI is set; `llmops run` stores its registry there)") from None

# The question the closing hint suggests; the README's examples are these too. tests/e2e checks that the
# model the default run trains answers each of them correctly (EXAMPLE_ANSWERS).
EXAMPLE_QUESTION = "convert 7 l to ml"
EXAMPLE_ANSWERS = {
    "convert 7 l to ml": "7000",
    "uppercase hello": "HELLO",
}

def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the whole release locally: import, fine-tune, evaluate, register, image, canary",
        description=(
            "Run the llm-release pipeline with kfp.local on this machine: import the base model, "
            "fine-tune it, evaluate it against the serving champion, register it in the embedded "
            "MLflow store, build a modelcar image (local docker-registry if installed, else an OCI "
            "layout), and roll it out on the local serving backend behind an analysed canary. "
            "Ends with a live OpenAI-compatible endpoint. Unchanged steps are cached between runs. "
            "Exit codes: 0 promoted, 1 stopped by the gate or rolled back, 2 error."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = ReleaseParams()
    p.add_argument("--base-model", default=d.base_model, help="bootstrap://tiny, hf://org/name[@rev], s3://, gs://, models:/name@alias or a folder")
    p.add_argument("--dataset", default=d.dataset, help="folder with train.jsonl/eval.jsonl, s3://, gs://, or bootstrap://tasks[?train=N&eval=M]")
    p.add_argument("--model-name", default=d.model_name, help="registered model and InferenceService name")
    p.add_argument("--no-finetune", action="store_true", help="skip fine-tuning: the base model is the candidate")
    p.add_argument("--method", default=d.finetune_method, help="fine-tune method: full or lora")
    p.add_argument("--steps", type=int, default=d.finetune_steps, help="fine-tune optimizer steps")
    p.add_argument("--learning-rate", type=float, default=d.learning_rate, help="peak learning rate")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="examples per step")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    p.add_argument("--max-accuracy-drop", type=float, default=d.max_accuracy_drop_points, help="gate: exact-match points the candidate may lose vs the champion")
    p.add_argument("--max-perplexity-rise", type=float, default=d.max_perplexity_rise_pct, help="gate: percent perplexity may rise vs the champion")
    p.add_argument("--min-accuracy", type=float, default=d.min_accuracy, help="gate: exact match (percent) every candidate needs")
    p.add_argument("--traffic-steps", default=d.traffic_steps, help="canary traffic percentages, ending at 100")
    p.add_argument("--interval", type=float, default=d.analysis_interval_s, help="seconds of traffic per canary analysis")
    p.add_argument("--min-requests", type=int, default=d.min_requests, help="requests per revision below which an analysis is inconclusive")
    p.add_argument("--max-latency-ratio", type=float, default=d.max_latency_ratio, help="canary p95 latency / stable p95 latency allowed")
    p.add_argument("--max-error-rate", type=float, default=d.max_error_rate, help="canary error rate (0..1) allowed")
    p.add_argument("--load-rps", type=float, default=d.load_rps, help="golden-prompt requests/s sent during the canary (nobody else queries a laptop)")
    p.add_argument("--serving-args", default="", help="extra model-server flags for the new version; test-only faults: '--fault_latency_ms 400', '--fault_error_rate 0.5'")
    p.add_argument("--state-dir", type=Path, default=Path(".llmops"), help="state folder: MLflow store, pipeline outputs, images, local serving")
    p.add_argument("--no-cache", action="store_true", help="re-run every step even when its inputs did not change")
    p.add_argument("--verbose", dest="stream_logs", action="store_true",
                   help="stream every step's log to the terminal instead of the stage view (the log file is written either way)")
    p.set_defaults(func=run)


def params_from_args(args: argparse.Namespace) -> ReleaseParams:
    return ReleaseParams(
        base_model=args.base_model,
        dataset=args.dataset,
        model_name=args.model_name,
        finetune=not args.no_finetune,
        finetune_method=args.method,
        finetune_steps=args.steps,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        seed=args.seed,
        max_accuracy_drop_points=args.max_accuracy_drop,
        max_perplexity_rise_pct=args.max_perplexity_rise,
        min_accuracy=args.min_accuracy,
        traffic_steps=args.traffic_steps,
        analysis_interval_s=args.interval,
        min_requests=args.min_requests,
        max_latency_ratio=args.max_latency_ratio,
        max_error_rate=args.max_error_rate,
        load_rps=args.load_rps,
        serving_args=args.serving_args,
    )


def run(args: argparse.Namespace) -> int:
    from pipelines.cli import CliError
    from pipelines.local_run import run_release
    from pipelines.params import ParamError

    try:
        params = params_from_args(args).validate()
    except ParamError as exc:
        raise CliError(str(exc)) from exc
    preflight(params, args.state_dir)
    from pipelines.local_run import default_log_path
    from pipelines.progress import LiveView, PlainView, StageBoard

    state_root = args.state_dir.resolve()
    log_path = default_log_path(state_root)
    board = StageBoard()
    stream = args.stream_logs or getattr(args, "verbose", False)
    print(f"llmops run: {params.model_name} from {params.base_model}; full log: {log_path}", flush=True)
    if stream:
        result = run_release(params, args.state_dir, cache=not args.no_cache, board=board,
                             log_path=log_path, echo=sys.stdout)
    elif sys.stdout.isatty():
        from rich.console import Console

        view = LiveView(board, Console(file=sys.stdout), title=f"llm-release · {params.model_name}",
                        footer=f"log: {log_path}")
        board.subscribe(view)
        with view:
            result = run_release(params, args.state_dir, cache=not args.no_cache,
                                 board=board, log_path=log_path)
    else:
        board.subscribe(PlainView(sys.stdout))
        result = run_release(params, args.state_dir, cache=not args.no_cache, board=board,
                             log_path=log_path)
    print()
    print(f"release {result.outcome}: {result.message}  ({result.wall_s:.0f}s)")
    if result.stage_times:
        print("stages: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.stage_times.items()))
    if result.report:
        print(f"release report: {result.report}")
    print(f"reports and metrics: {result.outputs_dir}")
    print(f"full log: {result.log_path}")
    print(f"champion: version {result.champion}" if result.champion else "champion: none yet")
    if result.endpoint:
        print(f"endpoint: {result.endpoint}  (OpenAI-compatible, model {params.model_name!r})")
        print(f"  llmops query {EXAMPLE_QUESTION!r}      # or any OpenAI client with base_url={result.endpoint}")
        print("  llmops status                            # version, traffic split, last rollout, report")
        print("  llmops down                              # stop local serving")
    mlflow_db = (args.state_dir / "mlflow" / "mlflow.db").resolve()
    print(f"MLflow UI: mlflow ui --backend-store-uri sqlite:///{mlflow_db} --default-artifact-root "
          f"{(args.state_dir / 'mlflow' / 'artifacts').resolve()}")
    return {"promoted": 0, "rolled_back": 1, "gate_failed": 1}.get(result.outcome, 2)
