"""Evaluate a model on a held-out JSONL, compare it with a reference, write metrics and a report.

Outputs under ``out_dir``: ``metrics.json`` (candidate and reference metrics,
verdict, policy), ``report.md`` (for people) and ``predictions.jsonl``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from components.evaluate.errors import EvaluateError, ReferenceError_
from components.evaluate.gate import GatePolicy, GateVerdict, gate
from components.evaluate.report import render_report

log = logging.getLogger(__name__)

METRIC_KEYS = ("exact_match", "perplexity", "eval_loss", "ttft_ms", "tokens_per_s", "examples")


@dataclass(frozen=True)
class EvalResult:
    """What an evaluation measured and decided."""

    metrics: dict  # the candidate's metrics
    reference_metrics: dict | None  # the reference's metrics, None for a first release
    verdict: GateVerdict
    report_md: Path
    metrics_json: Path


def measure(model_dir: str | Path, eval_file: str | Path, *, max_examples: int | None = None, seed: int = 0,
            batch_size: int = 32) -> tuple[dict, list]:
    """Compute the metrics of one model; returns (metrics, [(item, prediction)])."""
    import torch

    from components.evaluate.scoring import answer_perplexity, exact_match, generation_speed, load_eval_items, load_model

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists() and not (model_dir / "adapter_config.json").exists():
        raise EvaluateError(f"{model_dir} is not a model folder (no config.json)")
    torch.manual_seed(seed)
    model, tok, max_pos = load_model(model_dir)
    items = load_eval_items(eval_file, tok, max_examples)
    log.info("evaluating %s on %d examples", model_dir, len(items))
    acc, preds = exact_match(model, tok, items, batch_size, max_pos)
    ppl, nll = answer_perplexity(model, tok, items, batch_size, max_pos)
    speed = generation_speed(model, tok, max_positions=max_pos)
    metrics = {"exact_match": acc, "perplexity": ppl, "eval_loss": nll, **speed, "examples": len(items)}
    log.info("%s: exact match %.1f%%, perplexity %.3f, ttft %.1f ms, %.1f tokens/s",
             model_dir, acc, ppl, speed["ttft_ms"], speed["tokens_per_s"])
    return metrics, list(zip(items, preds))


def load_reference_metrics(path: Path) -> dict:
    """Metrics from a recorded JSON: our ``metrics.json`` (``{"metrics": {...}}``) or a flat dict."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReferenceError_(f"reference metrics {path} cannot be read as JSON: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("metrics"), dict):
        data = data["metrics"]
    if not isinstance(data, dict) or not any(k in data for k in METRIC_KEYS):
        raise ReferenceError_(
            f"reference metrics {path} holds none of the expected keys ({', '.join(METRIC_KEYS)})"
        )
    return data


def evaluate(
    model_dir: str | Path,
    eval_file: str | Path,
    out_dir: str | Path,
    *,
    reference: str | Path | None = None,
    policy: GatePolicy = GatePolicy(),
    max_examples: int | None = None,
    seed: int = 0,
) -> EvalResult:
    """Evaluate ``model_dir`` and gate it against ``reference``.

    Args:
        model_dir: the candidate model folder.
        eval_file: held-out JSONL (prompt/completion or chat).
        out_dir: where metrics.json, report.md and predictions.jsonl go.
        reference: a model folder (evaluated the same way) or a recorded metrics JSON; None = first release.
        policy: gate thresholds.
        max_examples: evaluate only the first N examples.
        seed: torch seed (generation is greedy; this pins anything else random).

    Returns:
        Metrics, reference metrics, the verdict and the output paths.

    Raises:
        GatePolicyError: invalid policy (before any work).
        DatasetError: unusable eval file (file and line).
        ReferenceError_: the reference is neither a model folder nor a metrics JSON.
        EvaluateError: the candidate is not a model folder.
    """
    policy.validate()
    out_dir = Path(out_dir)
    ref_metrics, ref_name = None, None
    if reference is not None:
        ref = Path(reference)
        if ref.is_dir():
            if not (ref / "config.json").exists():
                raise ReferenceError_(f"reference folder {ref} is not a model folder (no config.json)")
        elif not ref.is_file():
            raise ReferenceError_(f"reference {ref} does not exist; pass a model folder or a metrics JSON")
        else:
            ref_metrics = load_reference_metrics(ref)
        ref_name = str(ref)
    from components.finetune.data import read_records

    read_records(eval_file)  # validate the eval file before loading any model
    metrics, pairs = measure(model_dir, eval_file, max_examples=max_examples, seed=seed)
    if reference is not None and ref_metrics is None:
        ref_metrics, _ = measure(reference, eval_file, max_examples=max_examples, seed=seed)
    verdict = gate(metrics, ref_metrics, policy)
    log.info("gate %s: %s", "passed" if verdict.passed else "FAILED", "; ".join(verdict.reasons))

    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "predictions.jsonl").open("w", encoding="utf-8") as fh:
        for item, pred in pairs:
            fh.write(json.dumps({"prompt": item.prompt, "expected": item.answer, "predicted": pred,
                                 "correct": pred == item.answer}) + "\n")
    metrics_json = out_dir / "metrics.json"
    metrics_json.write_text(json.dumps({
        "metrics": metrics, "reference_metrics": ref_metrics, "reference": ref_name,
        "verdict": verdict.to_dict(), "policy": policy.to_dict(),
        "model_dir": str(model_dir), "eval_file": str(eval_file),
    }, indent=2))
    mistakes = [(i.prompt, i.answer, p) for i, p in pairs if p != i.answer][:5]
    report = out_dir / "report.md"
    report.write_text(render_report(metrics, ref_metrics, verdict, candidate_name=str(model_dir),
                                    reference_name=ref_name, eval_file=str(eval_file), mistakes=mistakes))
    return EvalResult(metrics=metrics, reference_metrics=ref_metrics, verdict=verdict, report_md=report,
                      metrics_json=metrics_json)
