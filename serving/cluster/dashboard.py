"""The Grafana dashboard for one InferenceService, built from the metrics the model server exports.

The model server (``python -m serving``) exports, labelled ``model_name`` and
``model_version``: ``llmops_requests_total{code}``, ``llmops_request_duration_seconds``
(histogram), ``llmops_time_to_first_token_seconds`` (histogram),
``llmops_generated_tokens_total``, ``llmops_prompt_tokens_total``,
``llmops_queue_depth``, ``llmops_inflight_requests`` and ``llmops_batch_size``
(histogram). Every query here uses only those; revisions are told apart by
``model_version``. Canary verdicts are not a metric: the rollout controller
records them as Kubernetes Events on the InferenceService, so the dashboard
shows a text panel with the ``kubectl`` command instead of inventing a series.

``serving/cluster/dashboards/llmops-inferenceservice.json`` is written by
``python -m serving.cluster.dashboard`` (a test checks it is up to date).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DASHBOARD_PATH = Path(__file__).resolve().parent / "dashboards" / "llmops-inferenceservice.json"
SEL = 'namespace="$namespace", model_name="$model"'
RATE = "$__rate_interval"


def _panel(pid: int, title: str, exprs: list[tuple[str, str]], unit: str, x: int, y: int, w: int = 12,
           stack_percent: bool = False, description: str = "") -> dict[str, Any]:
    custom: dict[str, Any] = {"lineWidth": 1, "fillOpacity": 10}
    if stack_percent:
        custom.update(stacking={"mode": "percent", "group": "A"}, fillOpacity=60)
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": w, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit, "custom": custom}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(exprs)
        ],
    }


def _quantiles(metric: str) -> list[tuple[str, str]]:
    return [
        (f"histogram_quantile({q}, sum by (le, model_version) (rate({metric}_bucket{{{SEL}}}[{RATE}])))",
         f"p{int(q * 100)} v{{{{model_version}}}}")
        for q in (0.5, 0.95)
    ]


def build_dashboard() -> dict[str, Any]:
    """The dashboard as a dict (Grafana JSON model)."""
    by_version = f"sum by (model_version) (rate(llmops_requests_total{{{SEL}}}[{RATE}]))"
    panels = [
        _panel(1, "Traffic split by revision (model_version)", [(by_version, "v{{model_version}}")],
               "reqps", 0, 0, stack_percent=True,
               description="Share of answered requests per model version: the canary's traffic percent as served."),
        _panel(2, "Requests per revision and status code",
               [(f"sum by (model_version, code) (rate(llmops_requests_total{{{SEL}}}[{RATE}]))",
                 "v{{model_version}} {{code}}")], "reqps", 12, 0),
        _panel(3, "Error ratio per revision (5xx)",
               [(f'sum by (model_version) (rate(llmops_requests_total{{{SEL}, code=~"5.."}}[{RATE}])) / {by_version}',
                 "v{{model_version}}")], "percentunit", 0, 8),
        _panel(4, "Request latency p50 / p95 per revision", _quantiles("llmops_request_duration_seconds"), "s", 12, 8),
        _panel(5, "Time to first token p50 / p95 per revision", _quantiles("llmops_time_to_first_token_seconds"),
               "s", 0, 16),
        _panel(6, "Tokens per second per revision", [
            (f"sum by (model_version) (rate(llmops_generated_tokens_total{{{SEL}}}[{RATE}]))", "generated v{{model_version}}"),
            (f"sum by (model_version) (rate(llmops_prompt_tokens_total{{{SEL}}}[{RATE}]))", "prompt v{{model_version}}"),
        ], "short", 12, 16),
        _panel(7, "Queue depth and in-flight requests", [
            (f"sum by (model_version) (llmops_queue_depth{{{SEL}}})", "queued v{{model_version}}"),
            (f"sum by (model_version) (llmops_inflight_requests{{{SEL}}})", "in flight v{{model_version}}"),
        ], "short", 0, 24),
        _panel(8, "Batch size p50 / p95", _quantiles("llmops_batch_size"), "short", 12, 24),
        {
            "id": 9,
            "type": "text",
            "title": "Canary analysis verdicts",
            "gridPos": {"h": 5, "w": 24, "x": 0, "y": 32},
            "options": {
                "mode": "markdown",
                "content": (
                    "The rollout controller records each analysis step and its verdict as a Kubernetes Event "
                    "on the InferenceService, and its state in the `llmops.io/*` annotations:\n\n"
                    "```\nkubectl -n $namespace get events --field-selector "
                    "involvedObject.kind=InferenceService,involvedObject.name=$model\n"
                    "kubectl -n $namespace get isvc $model -o jsonpath='{.metadata.annotations}'\n```\n\n"
                    "No verdict metric is exported, so none is graphed here."
                ),
            },
        },
    ]
    return {
        "uid": "llmops-isvc",
        "title": "llmops: InferenceService",
        "description": "Traffic split, errors, latency, TTFT and throughput per model version of one InferenceService.",
        "tags": ["llmops", "kserve"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
                {
                    "name": "namespace", "type": "query", "label": "Namespace",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": "label_values(llmops_requests_total, namespace)", "refresh": 2,
                },
                {
                    "name": "model", "type": "query", "label": "InferenceService",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": 'label_values(llmops_requests_total{namespace="$namespace"}, model_name)', "refresh": 2,
                },
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def dashboard_json() -> str:
    return json.dumps(build_dashboard(), indent=2, sort_keys=False) + "\n"


def main() -> int:
    DASHBOARD_PATH.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD_PATH.write_text(dashboard_json(), encoding="utf-8")
    print(DASHBOARD_PATH)
    return 0


if __name__ == "__main__":
    sys.exit(main())
