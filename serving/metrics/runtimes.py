"""Which Prometheus series the canary analysis reads, per serving runtime.

The analysis judges requests, server errors, end-to-end latency, time to first token and
generated tokens. Each runtime exports them under its own names; this module maps them, so
a vLLM-served version is judged the same way as one served by our runtime.

**llmops** (``serving/runtime/METRICS.md``): ``llmops_requests_total{code}``,
``llmops_request_duration_seconds``, ``llmops_time_to_first_token_seconds``,
``llmops_generated_tokens_total``; labels ``model_name``, ``model_version``.

**vLLM** (``kserve-vllmserver``, vLLM's OpenAI server). From vLLM's
``vllm/v1/metrics/loggers.py`` (``PrometheusStatLogger.__init__``, read at commit 005a810b),
every series labelled ``model_name`` (the served model name) and ``engine``:

* ``vllm:request_success`` (counter, exposed as ``vllm:request_success_total``), extra label
  ``finished_reason`` (``stop``, ``length``, ``abort``): finished requests;
* ``vllm:e2e_request_latency_seconds`` (histogram): end-to-end latency;
* ``vllm:time_to_first_token_seconds`` (histogram);
* ``vllm:generation_tokens`` / ``vllm:prompt_tokens`` (counters, ``_total``).

The engine does not count requests that fail in the server; vLLM's API server instruments its
routes with prometheus-fastapi-instrumentator (``vllm/entrypoints/serve/instrumentator/metrics.py``,
``Instrumentator(...).add()``: the default ``http_requests_total{handler, method, status}``,
status grouped as ``2xx``/``4xx``/``5xx``, no ``model_name``). Server errors are its ``5xx`` on the
completion routes; requests are finished requests plus those errors.

**huggingfaceserver** with the vLLM backend runs vLLM's engine in KServe's model server, whose
``/metrics`` exposes the same ``vllm:*`` engine families. KServe's server has no per-status request
counter, so errors are not measured for it (an error regression is not seen; latency and TTFT are).

vLLM's series carry no version: the InferenceService puts the version on the predictor pods
(``llmops.dev/model-version``, :data:`serving.isvc.MODEL_VERSION_POD_LABEL`) and the PodMonitor
copies it to a ``model_version`` target label, so the same selector picks canary or stable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from serving.isvc import ServingRuntimeKind
from serving.metrics.base import Histogram, MetricsTarget, RevisionMetrics
from serving.metrics.scrape import GENERATED, LATENCY, REQUESTS, TTFT

VERSION_LABEL = "model_version"  # on llmops series (exported) and on vLLM series (PodMonitor relabelling)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@dataclass(frozen=True)
class RuntimeMetricNames:
    """The series one runtime exports for the analysis."""

    runtime: ServingRuntimeKind
    requests: str  # counter of answered requests
    status_label: str  # its label that tells outcomes apart
    error_statuses: str  # regex over status_label values that are server errors ("" if none)
    latency: str  # end-to-end latency histogram (base name)
    ttft: str  # time-to-first-token histogram (base name)
    generated: str  # generated-token counter
    http_errors: str | None = None  # a separate counter of server errors (no model_name label), if any
    http_errors_match: str = ""  # its extra matchers

    def selector(self, target: MetricsTarget, with_model_name: bool = True) -> str:
        """The PromQL matcher for one revision (``model_name`` and version; namespace/revision/pods if set)."""
        matchers = []
        if with_model_name:
            matchers.append(f"model_name={_quote(target.model_name)}")
        matchers.append(f"{VERSION_LABEL}={_quote(target.model_version)}")
        if target.namespace:
            matchers.append(f"namespace={_quote(target.namespace)}")
        revision = getattr(target, "revision", None)
        if revision:
            matchers.append(f"revision={_quote(revision)}")
        pods = getattr(target, "pods", ())
        if pods:
            matchers.append("pod=~" + _quote("|".join(re.escape(p) for p in sorted(pods))))
        return "{" + ",".join(matchers) + "}"

    def is_error(self, status: str) -> bool:
        """Whether a ``status_label`` value is a server error."""
        return bool(self.error_statuses) and re.fullmatch(self.error_statuses, status or "") is not None

    def names(self) -> tuple[str, ...]:
        """Every series name this mapping reads (for docs and drift tests)."""
        base = (self.requests, f"{self.latency}_bucket", f"{self.latency}_sum", f"{self.ttft}_bucket",
                f"{self.ttft}_sum", self.generated)  # fmt: skip
        return base + ((self.http_errors,) if self.http_errors else ())


_VLLM_ENGINE = dict(
    requests="vllm:request_success_total",
    status_label="finished_reason",
    error_statuses="",  # every finished_reason is a finished request
    latency="vllm:e2e_request_latency_seconds",
    ttft="vllm:time_to_first_token_seconds",
    generated="vllm:generation_tokens_total",
)

MAPPINGS: dict[ServingRuntimeKind, RuntimeMetricNames] = {
    ServingRuntimeKind.LLMOPS: RuntimeMetricNames(
        ServingRuntimeKind.LLMOPS,
        requests=REQUESTS,
        status_label="code",
        error_statuses=r"5\d\d",  # as serving.metrics.scrape.is_server_error
        latency=LATENCY,
        ttft=TTFT,
        generated=GENERATED,
    ),
    ServingRuntimeKind.VLLM: RuntimeMetricNames(
        ServingRuntimeKind.VLLM,
        **_VLLM_ENGINE,
        http_errors="http_requests_total",
        http_errors_match='status="5xx",handler=~"/v1/(chat/)?completions"',
    ),
    ServingRuntimeKind.HUGGINGFACE: RuntimeMetricNames(ServingRuntimeKind.HUGGINGFACE, **_VLLM_ENGINE),
}


def mapping_for(runtime: str | ServingRuntimeKind | None) -> RuntimeMetricNames:
    """The mapping of ``runtime`` (default: our runtime).

    Raises:
        IsvcSpecError: an unknown runtime name (lists the known ones).
    """
    return MAPPINGS[ServingRuntimeKind.parse(runtime or ServingRuntimeKind.LLMOPS)]


def _series(name: str, sel: str) -> str:
    """``name{sel}``, also matching the name with ``:`` escaped to ``_``.

    prometheus_client (>= 0.22, which vLLM's server uses) answers an OpenMetrics scrape that names no
    escaping scheme, as Prometheus 2.x sends, with ``vllm_request_success_total`` for
    ``vllm:request_success_total`` (checked here with Prometheus 2.42 and prometheus_client 0.26).
    """
    names = sorted({name, name.replace(":", "_")})
    inner = sel[1:-1]
    return "{__name__=~" + _quote("|".join(names)) + ("," + inner if inner else "") + "}"


def _histogram(provider, name: str, sel: str, rng: str, at: float) -> Histogram:
    return provider.histogram_of(_series(name + "_bucket", sel), _series(name + "_sum", sel), rng, at)


def collect(provider, names: RuntimeMetricNames, target: MetricsTarget, start: float, end: float) -> RevisionMetrics:
    """:meth:`PrometheusProvider.collect` for a runtime's own series (see the module docstring).

    Args:
        provider: the ``PrometheusProvider`` (its ``query``, ``_value`` and ``_scalar`` are used).
        names: the runtime's mapping.
        target, start, end: as for ``collect``.

    Raises:
        MetricsUnavailable: Prometheus unreachable or answering badly.
    """
    if end < start:
        raise ValueError(f"window end {end} must not be before start {start}")
    if end == start:  # the controller's prime(): an empty window, nothing to query (stateless provider)
        return RevisionMetrics(target=target, start=start, end=end)
    sel = names.selector(target)
    rng = f"{max(1, int(round(end - start)))}s"
    rows = provider.query(f"sum by ({names.status_label}) (increase({_series(names.requests, sel)}[{rng}]))", end)
    requests = sum(provider._value(e) for e in rows)
    errors = sum(provider._value(e) for e in rows if names.is_error(e["metric"].get(names.status_label, "")))
    if names.http_errors:
        http_sel = names.selector(target, with_model_name=False)[:-1] + "," + names.http_errors_match + "}"
        failed = provider._scalar(f"sum(increase({_series(names.http_errors, http_sel)}[{rng}]))", end)
        requests, errors = requests + failed, errors + failed
    return RevisionMetrics(
        target=target,
        start=start,
        end=end,
        requests=int(round(requests)),
        errors=int(round(errors)),
        latency=_histogram(provider, names.latency, sel, rng, end),
        ttft=_histogram(provider, names.ttft, sel, rng, end),
        generated_tokens=int(round(provider._scalar(f"sum(increase({_series(names.generated, sel)}[{rng}]))", end))),
    )
