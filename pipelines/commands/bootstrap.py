"""``llmops bootstrap``: write the offline tiny model and the generated task dataset."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bootstrap",
        help="write the offline tiny model and task dataset",
        description=(
            "Generate the bootstrap://tiny model (byte-level BPE tokenizer + random GPT-2, "
            "safetensors) and the task dataset (train/eval/test JSONL), with no network."
        ),
    )
    p.add_argument("--out", type=Path, default=Path("bootstrap"), help="output folder (default: ./bootstrap)")
    p.add_argument("--preset", default="tiny", help="model size preset: tiny (default) or micro")
    p.add_argument("--train", type=int, default=4000, help="training examples (default 4000)")
    p.add_argument("--eval", type=int, default=200, help="evaluation examples (default 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from components.bootstrap.dataset import write_task_dataset
    from components.bootstrap.tiny import build_tiny_model
    from pipelines.cli import CliError

    if args.train <= 0 or args.eval <= 0:
        raise CliError("--train and --eval must be positive")
    try:
        model = build_tiny_model(args.out / "model", args.preset)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    files = write_task_dataset(args.out / "data", train=args.train, eval=args.eval, test=args.eval, seed=args.seed)
    print(f"model:   {model}")
    for name, path in files.items():
        print(f"{name + ':':8} {path}")
    return 0
