"""Wall time of the embedded release (``llmops run``), first run and cached re-run, stage by stage.

Usage: python benchmarks/e2e_run.py [--steps 600] [--interval 5] [--keep]

Both runs use a fresh state folder under a temp dir; the second run has the
same inputs, so kfp.local's cache serves dataset, import, fine-tune and
evaluate, while champion lookup, register, image build and the canary always
run (they have side effects). Serving is stopped at the end unless --keep.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

# the repo before this folder: benchmarks/serving.py would shadow the serving package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.local_run import run_release  # noqa: E402
from pipelines.local_services import stop_local_registry  # noqa: E402
from pipelines.params import ReleaseParams  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600, help="fine-tune steps (default 600, the run default)")
    ap.add_argument("--interval", type=float, default=5.0, help="canary analysis interval in seconds")
    ap.add_argument("--keep", action="store_true", help="leave the local service running")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)  # kfp.local reports task starts, finishes and cache hits at INFO
    state = Path(tempfile.mkdtemp(prefix="llmops-bench-")) / ".llmops"
    params = ReleaseParams(finetune_steps=args.steps, analysis_interval_s=args.interval)
    results = []
    try:
        for label in ("first run", "cached re-run"):
            r = run_release(params, state)
            results.append((label, r))
            print(f"{label}: {r.outcome} in {r.wall_s:.1f}s (champion v{r.champion})", flush=True)
    finally:
        if not args.keep:
            subprocess.run([sys.executable, "-m", "pipelines", "down", "--state-dir", str(state / "serving")],
                           capture_output=True)
            stop_local_registry(state)
    stages = sorted({s for _, r in results for s in r.stage_times})
    print()
    print("| stage | " + " | ".join(label for label, _ in results) + " |")
    print("|---|" + "---:|" * len(results))
    for s in stages:
        print(f"| {s} | " + " | ".join(f"{r.stage_times.get(s, float('nan')):.1f}s" for _, r in results) + " |")
    print("| **total (wall)** | " + " | ".join(f"**{r.wall_s:.1f}s**" for _, r in results) + " |")
    if len(results) == 2 and results[1][1].wall_s > 0:
        print(f"\nre-run / first run: {results[1][1].wall_s / results[0][1].wall_s:.2f}")


if __name__ == "__main__":
    main()
