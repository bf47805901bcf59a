"""Model-stage figures on this machine: fine-tune throughput (full, LoRA) and generation latency.

Run by hand (never part of the test pass/fail)::

    python benchmarks/stages.py             # throughput + latency, ~1-2 minutes on 2 CPU cores
    python benchmarks/stages.py --gain      # also: default fine-tune of bootstrap://tiny and its exact-match gain

Prints a Markdown table; figures depend on the CPU and on what else runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40, help="fine-tune steps per method for throughput (default 40)")
    ap.add_argument("--gain", action="store_true", help="also run the default fine-tune and measure exact-match gain")
    ap.add_argument("--preset", default="tiny", help="bootstrap preset (default tiny)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's choice; 1 is fastest on a busy shared machine)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from components.bootstrap.dataset import write_task_dataset
    from components.bootstrap.tiny import build_tiny_model
    from components.evaluate.evaluator import measure
    from components.evaluate.scoring import generation_speed, load_model
    from components.finetune import FinetuneConfig, finetune

    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="llmops-bench-") as tmp:
        tmp = Path(tmp)
        model = build_tiny_model(tmp / "model", args.preset)
        data = write_task_dataset(tmp / "data", train=4000, eval=200, test=200)
        for method in ("full", "lora"):
            cfg = FinetuneConfig(method=method, max_steps=args.steps, checkpoint_every=0,
                                 learning_rate=2e-3 if method == "full" else 1e-2)
            r = finetune(model, data["train"], tmp / f"ft-{method}", cfg)
            rows.append((f"fine-tune {method}: tokens/s (batch 32)", f"{r.tokens_per_s:,.0f}"))
            rows.append((f"fine-tune {method}: s/step", f"{r.wall_s / r.steps:.3f}"))
        m, tok, max_pos = load_model(model)
        speed = generation_speed(m, tok, max_positions=max_pos)
        rows.append(("generation: time to first token (ms, batch 1, median)", f"{speed['ttft_ms']:.1f}"))
        rows.append(("generation: tokens/s (batch 1, 32 new tokens, median)", f"{speed['tokens_per_s']:.1f}"))
        if args.gain:
            base, _ = measure(model, data["eval"])
            t0 = time.monotonic()
            r = finetune(model, data["train"], tmp / "ft-default", FinetuneConfig(checkpoint_every=0))
            tuned, _ = measure(r.model_dir, data["eval"])
            rows.append((f"default full fine-tune ({r.steps} steps): wall s", f"{time.monotonic() - t0:.0f}"))
            rows.append(("exact match on eval (200): base -> tuned (%)",
                         f"{base['exact_match']:.1f} -> {tuned['exact_match']:.1f}"))
            rows.append(("answer perplexity: base -> tuned", f"{base['perplexity']:.1f} -> {tuned['perplexity']:.3f}"))

    print(f"# llmops model stages on {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| measure | value |\n|---|---:|")
    for k, v in rows:
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
