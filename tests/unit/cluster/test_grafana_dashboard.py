"""The Grafana dashboard loads and only queries metrics the model server exports."""

from __future__ import annotations

import json
import re

from serving.cluster.dashboard import DASHBOARD_PATH, dashboard_json

# what serving/runtime exports (the model server's documented metric set)
EXPORTED = {
    "llmops_requests_total", "llmops_request_duration_seconds", "llmops_time_to_first_token_seconds",
    "llmops_generated_tokens_total", "llmops_prompt_tokens_total", "llmops_queue_depth",
    "llmops_inflight_requests", "llmops_batch_size",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
METRIC_RE = re.compile(r"\b(llmops_[a-z_]+)\b")


def load() -> dict:
    return json.loads(DASHBOARD_PATH.read_text())


def queries(dash: dict) -> list[str]:
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return exprs


def metric_names(dash: dict) -> set[str]:
    return {m for q in queries(dash) for m in METRIC_RE.findall(q)}


def base_name(sample: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if sample.endswith(suffix) and sample[: -len(suffix)] in EXPORTED:
            return sample[: -len(suffix)]
    return sample


def test_file_is_up_to_date():
    assert DASHBOARD_PATH.read_text() == dashboard_json(), "run `python -m serving.cluster.dashboard`"


def test_dashboard_has_grafana_shape():
    dash = load()
    for key in ("uid", "title", "panels", "templating", "schemaVersion", "time"):
        assert key in dash, key
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in dash["panels"]:
        assert {"id", "type", "title", "gridPos"} <= set(p)
        if p["type"] != "text":
            assert p["targets"], p["title"]
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs))
            assert all(t["expr"].strip() for t in p["targets"])
    variables = {v["name"] for v in dash["templating"]["list"]}
    used = set(re.findall(r"\$(\w+)", json.dumps(dash["panels"]))) - {"__rate_interval"}
    assert used <= variables, used - variables


def test_dashboard_covers_what_a_canary_needs():
    titles = " ".join(p["title"].lower() for p in load()["panels"])
    for needle in ("traffic split", "error", "latency", "time to first token", "tokens per second", "verdicts"):
        assert needle in titles, needle
    exprs = " ".join(queries(load()))
    assert "histogram_quantile(0.95" in exprs and "histogram_quantile(0.5" in exprs
    assert "by (model_version)" in exprs


def test_every_queried_metric_is_in_the_exported_set():
    names = {base_name(n) for n in metric_names(load())}
    assert names and names <= EXPORTED, names - EXPORTED
    # histograms are queried through their _bucket series
    assert {"llmops_request_duration_seconds_bucket", "llmops_time_to_first_token_seconds_bucket"} <= metric_names(load())
