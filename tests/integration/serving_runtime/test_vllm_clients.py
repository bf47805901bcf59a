"""A client nobody here wrote: GuideLLM (vLLM's benchmark tool) against the real server, unmodified.

GuideLLM probes ``GET {target}/health`` (vLLM's route; target is the URL without ``/v1``), then sends
chat requests with vLLM's extensions (``stream_options.continuous_usage_stats``, ``ignore_eos``,
``max_completion_tokens``, ``stop: null``) and reads token counts from streamed ``usage``.
"""

from __future__ import annotations

import os

import httpx
import pytest

from tests.integration.serving_runtime.conftest import MODEL, metric, scrape
from tests.support import guidellm

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def guidellm_ready():
    if not guidellm.available():
        if os.environ.get("CI"):
            pytest.fail(guidellm.MISSING)  # CI runs scripts/setup.sh, which creates it
        pytest.skip(guidellm.MISSING)


def test_health_answers_under_the_openai_prefix(server):
    resp = httpx.get(f"{server.url}/openai/health", timeout=10)
    assert resp.status_code == 200


def test_guidellm_streamed_chat_completes_every_request(server, tiny_model, tmp_path, guidellm_ready):
    before = scrape(server.url)
    spec = guidellm.GuideLLMRun(
        target=f"{server.url}/openai/v1", model=MODEL, tokenizer=tiny_model,
        concurrencies=(4,), requests=16, prompt_tokens=24, output_tokens=12, slo_ttft_ms=60_000,
    )  # fmt: skip
    (bench,) = guidellm.run(spec, tmp_path)
    figures = guidellm.summary(bench)
    assert figures["requests"] == {"successful": 16, "errored": 0, "incomplete": 0, "total": 16}
    assert figures["output_tokens_mean"] == 12  # ignore_eos + max_completion_tokens honoured
    assert figures["ttft_p50_s"] > 0 and figures["itl_p50_s"] > 0  # streamed, token by token, with usage
    assert figures["slo_attainment"] == 1.0
    after = scrape(server.url)
    served = metric(after, "llmops_requests_total", code="200") - metric(before, "llmops_requests_total", code="200")
    assert served >= 16


def _chat(server, **extra):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Q: add 1 and 2"}], "max_tokens": 8, **extra}
    return httpx.post(f"{server.url}/openai/v1/chat/completions", json=body, timeout=60)


def test_vllm_sampling_extensions_are_honoured(server):
    """The official openai client with vLLM's extra_body: min_tokens/ignore_eos/top_k/repetition_penalty work."""
    import openai

    client = openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key="none", max_retries=0, timeout=60)
    kwargs = dict(model=MODEL, prompt="Q: add 1 and 2\nA:", max_tokens=12, temperature=0)
    plain = client.completions.create(**kwargs, extra_body={"ignore_eos": True})
    penalised = client.completions.create(**kwargs, extra_body={"ignore_eos": True, "repetition_penalty": 2.0})
    assert plain.choices[0].text != penalised.choices[0].text  # greedy output changes under the penalty
    held = client.completions.create(
        **kwargs, extra_body={"min_tokens": 12, "top_k": 5, "min_p": 0.05, "priority": 0, "request_id": "r-1"}
    )
    assert held.usage.completion_tokens == 12  # eos suppressed until min_tokens
    sampled = client.completions.create(
        **{**kwargs, "temperature": 1.0, "seed": 3}, extra_body={"top_k": 1, "ignore_eos": True}
    )
    assert sampled.choices[0].text == plain.choices[0].text  # top_k=1 sampling is greedy


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"guided_json": {"type": "object"}}, "guided_json"),
        ({"use_beam_search": True}, "use_beam_search"),
        ({"skip_special_tokens": False}, "skip_special_tokens"),
        ({"priority": 3}, "priority"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"min_tokens": 99}, "min_tokens"),
        ({"frobnicate": 1}, "frobnicate"),  # neither OpenAI nor vLLM defines it
        ({"stream_options": {"continuous_usage_stats": True, "bogus": 1}, "stream": True}, "stream_options.bogus"),
    ],
)
def test_unhonourable_or_unknown_fields_are_refused(server, extra, param):
    resp = _chat(server, **extra)
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == param


def test_readme_documents_every_vllm_extension():
    from pathlib import Path

    from serving.runtime.vllm_compat import markdown_table

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    assert markdown_table() in readme, "README's vLLM extension table is stale: paste vllm_compat.markdown_table()"
