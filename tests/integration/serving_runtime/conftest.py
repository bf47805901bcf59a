"""A real ``python -m serving`` process over the bootstrap tiny model, shared per test module."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.model_server import running_model_server

MODEL = "tiny"
VERSION = "v7"


@pytest.fixture(scope="module")
def server(tiny_model):
    with running_model_server(
        tiny_model, model_name=MODEL, model_version=VERSION, args=["--torch_threads", "1", "--max_queue", "64"]
    ) as running:
        yield running


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """``/metrics`` as {(sample name, sorted labels): value} for the llmops_* families."""
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("llmops_"):
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def metric(samples: dict, name: str, **labels) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))
