"""Every metric the Grafana dashboard queries is on a live model server's /metrics."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.cluster.dashboard import DASHBOARD_PATH
from tests.support.model_server import running_model_server

pytestmark = pytest.mark.integration

METRIC_RE = re.compile(r"\b(llmops_[a-z_]+)\b")


@pytest.fixture(scope="module")
def scraped(tiny_model):
    """Sample names and label names from /metrics after one completion was answered."""
    with running_model_server(tiny_model, model_name="tiny", model_version="v7") as server:
        with httpx.Client(timeout=60) as client:
            r = client.post(f"{server.url}/openai/v1/completions",
                            json={"model": "tiny", "prompt": "Q: convert 3 km to m\nA:", "max_tokens": 3})
            assert r.status_code == 200, r.text
            text = client.get(f"{server.url}/metrics").text
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, set()).update(s.labels)
    return samples


def test_every_dashboard_metric_is_exported(scraped):
    dash = json.loads(DASHBOARD_PATH.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    names = {m for e in exprs for m in METRIC_RE.findall(e)}
    assert names
    missing = sorted(n for n in names if n not in scraped)
    assert not missing, f"dashboard queries metrics the server does not export: {missing}"
    for name in names:
        assert {"model_name", "model_version"} <= scraped[name], name
    assert "code" in scraped["llmops_requests_total"]
    assert "le" in scraped["llmops_request_duration_seconds_bucket"]
