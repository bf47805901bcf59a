"""Fine-tune throughput: 1 process vs 2 torchrun processes (DDP, gloo on the CPU) at the same total batch.

Run by hand (never part of the test pass/fail)::

    python benchmarks/finetune_distributed.py                 # tiny model, 40 steps of 32 examples
    python benchmarks/finetune_distributed.py --preset micro --steps 60 --method lora

Rows: the single-pod path in this process (what the ``pod`` trainer runs), torchrun with
1 process (the same path under the launcher) and torchrun with 2 processes (each takes
half of every batch). tokens/s counts non-padding tokens of the training loop only
(model load and process start-up are in the wall column). Scaling efficiency =
tokens/s(2) / (2 x tokens/s(1)). Every process uses one torch thread, so 2 processes
want 2 free cores; figures depend on the CPU and on what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _torchrun(nproc: int, model: Path, data: Path, out: Path, config: dict) -> tuple[dict, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc-per-node", str(nproc),
           "-m", "components.finetune.distributed", "--model", str(model), "--data", str(data), "--out", str(out),
           "--config-json", json.dumps(config)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"torchrun x{nproc} failed:\n{proc.stderr[-3000:]}")
    return json.loads((out / "finetune_result.json").read_text()), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", help="bootstrap preset (default tiny)")
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per run (default 40)")
    ap.add_argument("--batch-size", type=int, default=32, help="total examples per step, split over the processes")
    ap.add_argument("--method", default="full", help="full (default) or lora")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    torch.set_num_threads(1)
    from components.bootstrap.dataset import write_task_dataset
    from components.bootstrap.tiny import build_tiny_model
    from components.finetune import FinetuneConfig, finetune

    config = {"max_steps": args.steps, "batch_size": args.batch_size, "method": args.method, "checkpoint_every": 0,
              "log_every": max(1, args.steps // 4)}
    with tempfile.TemporaryDirectory(prefix="llmops-bench-dist-") as tmp:
        root = Path(tmp)
        model = build_tiny_model(root / "model", args.preset)
        data = write_task_dataset(root / "data", train=2000, eval=10, test=10)["train"]
        rows = []
        t0 = time.perf_counter()
        r = finetune(model, data, root / "inproc", FinetuneConfig(**config))
        rows.append(("single-pod path (in process)", 1, r.tokens_per_s, r.wall_s, time.perf_counter() - t0, r.final_loss))
        for nproc in (1, 2):
            res, wall = _torchrun(nproc, model, data, root / f"torchrun-{nproc}", config)
            rows.append((f"torchrun, {nproc} process{'es' if nproc > 1 else ''}", nproc, res["tokens_per_s"],
                         res["wall_s"], wall, res["final_loss"]))

    one, two = rows[1][2], rows[2][2]
    print(f"\n{args.method} fine-tune of bootstrap://{args.preset}, {args.steps} steps x {args.batch_size} examples "
          f"(total batch fixed), {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, torch {torch.__version__}\n")
    print("| run | processes | tokens/s | train s | wall s (with start-up) | final loss |")
    print("|---|---|---|---|---|---|")
    for name, n, tps, train_s, wall, loss in rows:
        print(f"| {name} | {n} | {tps:,.0f} | {train_s:.1f} | {wall:.1f} | {loss:.4f} |")
    print(f"\nspeed-up 2 vs 1 process: {two / one:.2f}x, scaling efficiency {two / (2 * one):.0%}; "
          f"single-pod path vs torchrun x1: {rows[0][2] / one:.2f}x")


if __name__ == "__main__":
    main()
