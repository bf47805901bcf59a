"""``llmops evaluate``: exact match, perplexity and speed on held-out data, gated against a reference."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a model and gate it against a reference model or recorded metrics",
        description=(
            "Measure exact-match accuracy (greedy), answer perplexity, time to first token and "
            "tokens/s (batch 1) of MODEL on EVAL (JSONL). With --reference (a model folder, evaluated "
            "the same way, or a metrics.json recorded for the champion) the gate compares the two; "
            "without it the run is a first release. Writes OUT/metrics.json and OUT/report.md. "
            "Exit code 1 when the gate fails."
        ),
    )
    p.add_argument("model", type=Path, help="candidate model folder")
    p.add_argument("eval", type=Path, help="held-out JSONL file")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--reference", type=Path, default=None, help="reference model folder or metrics JSON")
    p.add_argument("--max-accuracy-drop", type=float, default=2.0, help="allowed exact-match drop in points (default 2)")
    p.add_argument("--max-perplexity-rise", type=float, default=10.0, help="allowed perplexity rise in %% (default 10)")
    p.add_argument("--max-speed-drop", type=float, default=None, help="allowed tokens/s drop in %% (default: report only)")
    p.add_argument("--min-accuracy", type=float, default=0.0, help="exact match (%%) every candidate needs (default 0)")
    p.add_argument("--max-examples", type=int, default=None, help="evaluate only the first N examples")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from components.evaluate import EvaluateError, GatePolicy, evaluate
    from components.finetune import DatasetError
    from pipelines.cli import CliError

    policy = GatePolicy(max_accuracy_drop_points=args.max_accuracy_drop, max_perplexity_rise_pct=args.max_perplexity_rise,
                        max_speed_drop_pct=args.max_speed_drop, min_accuracy=args.min_accuracy)
    try:
        r = evaluate(args.model, args.eval, args.out, reference=args.reference, policy=policy,
                     max_examples=args.max_examples)
    except (EvaluateError, DatasetError) as exc:
        raise CliError(str(exc)) from exc
    m = r.metrics
    print(f"exact match: {m['exact_match']:.1f}%   perplexity: {m['perplexity']:.3f}   "
          f"ttft: {m['ttft_ms']:.1f} ms   {m['tokens_per_s']:.1f} tokens/s")
    print(f"gate:        {'PASSED' if r.verdict.passed else 'FAILED'}")
    for reason in r.verdict.reasons:
        print(f"  - {reason}")
    print(f"report:      {r.report_md}")
    return 0 if r.verdict.passed else 1
