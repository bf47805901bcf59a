"""Real model servers (tiny model): scrape provider, analysis and quality probe end to end.

A stable revision ``v1`` and a canary ``v2`` started with the test-only faults
(half of its requests answer 500, +150 ms each). The scrape provider must count
exactly what the client saw, the analysis must fail the canary, and the quality
probe must score real answers.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from serving.metrics.base import MetricsTarget
from serving.metrics.scrape import ScrapeProvider
from serving.rollout.analysis import AnalysisPolicy, Phase, analyse
from components.bootstrap.dataset import default_golden_set
from serving.rollout.quality import (
    GoldenPrompt,
    QualityProbeError,
    load_golden_set,
    probe,
)
from tests.support.model_server import start_model_server
from tests.support.prometheus import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "tiny"


@pytest.fixture(scope="module")
def servers(tiny_model):
    """(stable_url, canary_url), started in parallel to halve the wait."""
    with ThreadPoolExecutor(2) as pool:
        stable_f = pool.submit(start_model_server, tiny_model, model_name=MODEL, model_version="v1")
        canary_f = pool.submit(
            start_model_server,
            tiny_model,
            model_name=MODEL,
            model_version="v2",
            args=["--fault_error_rate", "0.5", "--fault_latency_ms", "150", "--fault_seed", "7"],
        )
        started = []
        try:
            for f in (stable_f, canary_f):
                started.append(f.result())
        except Exception:
            for s in started:
                s.stop()
            raise
    stable, canary = started
    try:
        yield stable.url, canary.url
    finally:
        stable.stop()
        canary.stop()


def _complete(client: httpx.Client, url: str, prompt: str) -> int:
    r = client.post(
        f"{url}/openai/v1/completions",
        json={"model": MODEL, "prompt": prompt, "max_tokens": 4, "temperature": 0},
    )
    return r.status_code


def test_scrape_counts_what_clients_saw_and_analysis_fails_the_canary(servers):
    stable_url, canary_url = servers
    stable_t = MetricsTarget(MODEL, "v1", urls=(stable_url,))
    canary_t = MetricsTarget(MODEL, "v2", urls=(canary_url,))
    provider = ScrapeProvider()
    provider.prime(stable_t)
    provider.prime(canary_t)

    prompts = [gp.prompt for gp in default_golden_set(24)]
    with httpx.Client(timeout=30) as client:
        stable_codes = [_complete(client, stable_url, p) for p in prompts]
        canary_codes = [_complete(client, canary_url, p) for p in prompts]

    stable = provider.collect(stable_t, 0, 1)
    canary = provider.collect(canary_t, 0, 1)
    assert stable.requests == len(prompts) and stable.errors == 0
    assert canary.requests == len(prompts)
    assert canary.errors == sum(c >= 500 for c in canary_codes) > 0
    assert all(c == 200 for c in stable_codes)
    assert canary.latency.count == len(prompts)
    # the injected 150 ms is in every canary observation, errors included
    assert dict(canary.latency.buckets)[0.1] == 0
    assert canary.latency.total >= 0.15 * len(prompts)
    assert stable.generated_tokens > 0

    result = analyse(canary, stable, AnalysisPolicy(min_requests=20, max_latency_ratio=None, max_ttft_ratio=None))
    assert result.phase is Phase.FAILED, result.to_dict()
    assert result.check("error_rate_increase").phase is Phase.FAILED


def test_quality_probe_scores_real_answers(servers, tmp_path):
    stable_url, _ = servers
    golden = default_golden_set(10)
    first = probe(stable_url, stable_url, golden, MODEL)
    assert first.n == 10
    assert first.canary_score == first.stable_score  # greedy decoding is deterministic
    # what the (untrained) model really answers, from its misses
    answers = {f["prompt"]: f["got"] for f in first.failures}
    answers.update({gp.prompt: gp.expected for gp in golden if gp.prompt not in answers})

    # a golden file whose first 6 answers are the model's own, the last 4 wrong
    path = tmp_path / "golden.jsonl"
    with path.open("w") as fh:
        for i, gp in enumerate(golden):
            expected = answers[gp.prompt] if i < 6 else "definitely not this"
            fh.write(json.dumps({"prompt": gp.prompt, "completion": " " + expected}) + "\n")
    result = probe(stable_url, None, load_golden_set(path), MODEL)
    assert result.canary_score == pytest.approx(0.6)
    assert result.stable_score is None
    assert [f["expected"] for f in result.failures] == ["definitely not this"] * 4


def test_quality_probe_of_a_failing_revision_is_a_probe_error(servers):
    stable_url, canary_url = servers
    golden = default_golden_set(8)  # half the canary's requests answer 500
    with pytest.raises(QualityProbeError, match=r"/openai/v1/completions answered HTTP 500"):
        probe(canary_url, stable_url, golden, MODEL)


def test_quality_probe_of_an_unreachable_revision_names_it():
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(QualityProbeError, match=f"cannot reach {dead}/openai/v1"):
        probe(dead, None, [GoldenPrompt("Q: uppercase abc\nA:", "ABC")], MODEL, timeout_s=2)
