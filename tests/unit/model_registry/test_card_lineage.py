"""The model card says what the lineage tags say: base model, dataset, digests."""

from __future__ import annotations

import json

from model_registry.card import build_model_card, model_card_from_tags, source_of


def test_the_pipelines_lineage_key_names_the_base_model():
    assert source_of({"source_model": "bootstrap://tiny"}) == "bootstrap://tiny"
    assert source_of({"llmops.source_uri": "hf://org/m", "llmops.source_model": "x"}) == "hf://org/m"
    assert source_of({}) is None
    card = build_model_card("llm", source=source_of({"source_model": "bootstrap://tiny"}))
    assert "Base model: `bootstrap://tiny`" in card


def test_a_card_from_the_tags_names_every_digest_they_hold():
    tags = {
        "llmops.source_model": "bootstrap://tiny",
        "llmops.dataset": "bootstrap://tasks",
        "llmops.dataset_sha256": "7a86c894",
        "llmops.content_digest": "sha256:2963",
        "llmops.image_ref": "127.0.0.1:5000/llmops/llm@sha256:9977",
        "llmops.image_digest": "sha256:9977",
        "llmops.gate_verdict": "passed",
        "llmops.params": json.dumps({"steps": 600}),
        "llmops.metrics": json.dumps({"exact_match": 86.0}),
        "mlflow.other": "ignored",
    }
    card = model_card_from_tags("llm", "2", tags)
    assert card.startswith("# llm v2\n")
    for value in ("bootstrap://tiny", "bootstrap://tasks", "7a86c894", "sha256:2963",
                  "127.0.0.1:5000/llmops/llm@sha256:9977", "Gate verdict: **passed**", "| exact_match | 86 |"):
        assert value in card, value
    assert "`unknown`" not in card
