"""The fine-tune really teaches the random bootstrap model the task (the product's offline demo)."""

import pytest

from components.evaluate import GatePolicy, evaluate
from components.finetune import FinetuneConfig, finetune

# Measured on 2 shared CPU cores: 400-600 steps take the random tiny model from 0% to
# 75-95% exact match; 30 points leaves room for seed and BLAS noise.
CI_STEPS = 500
MIN_GAIN_POINTS = 30.0


@pytest.mark.slow
def test_full_finetune_gives_a_clear_exact_match_gain(tiny_model, task_data, tmp_path):
    tuned = finetune(tiny_model, task_data["train"], tmp_path / "ft",
                     FinetuneConfig(max_steps=CI_STEPS, checkpoint_every=0, log_every=100))
    result = evaluate(tuned.model_dir, task_data["eval"], tmp_path / "ev", reference=tiny_model,
                      policy=GatePolicy(min_accuracy=MIN_GAIN_POINTS))
    base, cand = result.reference_metrics["exact_match"], result.metrics["exact_match"]
    assert base == 0.0
    assert cand - base >= MIN_GAIN_POINTS, f"exact match {base:.1f}% -> {cand:.1f}%"
    assert result.verdict.passed
    assert result.metrics["perplexity"] < result.reference_metrics["perplexity"] / 10
