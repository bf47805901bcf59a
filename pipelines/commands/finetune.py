"""``llmops finetune``: full or LoRA fine-tune of a model folder on a JSONL dataset."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a model folder (full or LoRA) on prompt/completion or chat JSONL",
        description=(
            "Fine-tune MODEL on TRAIN (JSONL, {'prompt','completion'} or {'messages': [...]} per line; "
            "loss on answers only). Writes OUT/model (safetensors), OUT/loss_curve.png/.json and "
            "checkpoints in OUT/checkpoints; re-running with the same OUT after an interruption resumes "
            "from the last checkpoint. CPU by default, GPU (bf16) when available."
        ),
    )
    p.add_argument("model", type=Path, help="model folder (e.g. from llmops import)")
    p.add_argument("train", type=Path, help="training JSONL file")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--method", choices=("full", "lora"), default="full", help="full (default) or lora")
    p.add_argument("--max-steps", type=int, default=600, help="optimizer steps (default 600)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    p.add_argument("--batch-size", type=int, default=32, help="examples per step (default 32)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--time-budget", type=float, default=None, help="stop after this many seconds of training")
    p.add_argument("--checkpoint-every", type=int, default=100, help="checkpoint every N steps (0: never)")
    p.add_argument("--lora-r", type=int, default=16, help="LoRA rank (default 16)")
    p.add_argument("--no-merge", action="store_true", help="LoRA: keep OUT/model as an adapter folder")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    from components.finetune import FinetuneConfig

    return FinetuneConfig(
        method=args.method, max_steps=args.max_steps, learning_rate=args.lr, batch_size=args.batch_size,
        seed=args.seed, time_budget_s=args.time_budget, checkpoint_every=args.checkpoint_every,
        lora_r=args.lora_r, merge_adapter=not args.no_merge,
    )


def run(args: argparse.Namespace) -> int:
    from components.finetune import FinetuneError, finetune
    from pipelines.cli import CliError

    try:
        r = finetune(args.model, args.train, args.out, config_from_args(args))
    except FinetuneError as exc:
        raise CliError(str(exc)) from exc
    resumed = f" (resumed from step {r.resumed_from_step})" if r.resumed_from_step else ""
    print(f"model:       {r.model_dir}")
    print(f"steps:       {r.steps}{resumed}, stopped by {r.stopped_by}")
    print(f"final loss:  {r.final_loss:.4f}")
    print(f"speed:       {r.tokens_per_s:.0f} tokens/s over {r.wall_s:.1f}s on {r.device}")
    print(f"loss curve:  {r.loss_curve_png}")
    return 0
