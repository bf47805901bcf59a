"""The release pipeline's parameters, validated before anything runs: the one source of their defaults.

:class:`ReleaseParams` holds the defaults of the embedded run (``llmops run``).
The compiled pipeline takes its defaults from :func:`cluster_defaults`: the same
values except :data:`CLUSTER_OVERRIDES`, the knobs where a cluster with real
users differs from one laptop with synthetic traffic. ``llmops run``'s flags,
the pipeline signature and ``llmops submit`` (which sends only what the user
sets) read them from here; ``tests/unit/pipeline_params`` fails on any drift.
:meth:`ReleaseParams.validate` names the parameter at fault and the fix, so a
bad value never starts a step.
"""

from __future__ import annotations

from llmops_core.errors import LlmopsError

import re
from dataclasses import asdict, dataclass, fields, replace

MODEL_SCHEMES = ("bootstrap://", "hf://", "s3://", "gs://", "models:/", "file://", "local path")
DATASET_SCHEMES = ("bootstrap://tasks", "s3://", "gs://", "file://", "local path")


class ParamError(LlmopsError, ValueError):
    """A pipeline parameter is invalid; the message names it."""


def parse_steps(text: str) -> tuple[int, ...]:
    """``"10,25,50,100"`` -> ``(10, 25, 50, 100)``, checked by the rollout strategy's own rules."""
    from serving.rollout.strategy import RolloutStrategy, StrategyError
    from serving.rollout.strategy import parse_steps as parse

    try:
        steps = parse(str(text))
        RolloutStrategy(steps=steps).validate()
    except StrategyError as exc:
        raise ParamError(f"traffic_steps={text!r}: {exc}") from None
    return steps


@dataclass(frozen=True)
class ReleaseParams:
    """Every knob of one release, with the defaults of the embedded demo."""

    base_model: str = "bootstrap://tiny"  # model source: bootstrap://, hf://org/name[@rev], s3://, gs://, models:/name@alias, path
    dataset: str = "bootstrap://tasks"  # folder (or bootstrap://tasks) with train.jsonl and eval.jsonl
    model_name: str = "llm"  # registered model in MLflow, and the InferenceService name
    finetune: bool = True  # False: the base model is the candidate
    finetune_method: str = "full"  # full or lora
    finetune_steps: int = 600  # optimizer steps (learning switches on after ~400 on the tiny model)
    learning_rate: float = 2e-3  # peak learning rate
    batch_size: int = 32  # examples per step
    seed: int = 0  # seeds data order and initialisation
    max_accuracy_drop_points: float = 2.0  # gate: exact match may fall at most this many points vs the champion
    max_perplexity_rise_pct: float = 10.0  # gate: answer perplexity may rise at most this many percent
    min_accuracy: float = 0.0  # gate: exact match every candidate needs (percent)
    traffic_steps: str = "10,25,50,100"  # canary traffic percentages, ending at 100
    analysis_interval_s: float = 5.0  # seconds of traffic judged per analysis
    min_requests: int = 10  # requests per revision below which an analysis is inconclusive
    max_latency_ratio: float = 1.5  # canary p95 latency and TTFT may be at most this times the stable ones
    max_error_rate: float = 0.05  # canary error rate above this fails (0..1)
    load_rps: float = 8.0  # golden-prompt requests/s sent during the canary (nobody else queries a laptop)
    serving_args: str = ""  # extra model-server flags for the candidate (e.g. test-only --fault_latency_ms 400)

    def validate(self) -> "ReleaseParams":
        """Raise :class:`ParamError` naming the first bad parameter; return self."""
        if not self.base_model or not re.match(r"^([a-z0-9]+:/{1,2}|/|\.|~|[\w.-]+(/|$))", self.base_model):
            raise ParamError(f"base_model={self.base_model!r}: use one of {', '.join(MODEL_SCHEMES)}")
        scheme = self.base_model.split(":", 1)[0] + ":" if ":" in self.base_model else ""
        from components.import_model.sources.base import Scheme

        if scheme and scheme not in {f"{known.value}:" for known in Scheme}:
            raise ParamError(
                f"base_model={self.base_model!r}: unknown scheme {scheme!r}; known: {', '.join(MODEL_SCHEMES)}"
            )
        dscheme = self.dataset.split("://", 1)[0] if "://" in self.dataset else ""
        if dscheme and dscheme not in ("bootstrap", "s3", "gs", "file"):
            raise ParamError(
                f"dataset={self.dataset!r}: unknown scheme {dscheme + '://'!r}; known: {', '.join(DATASET_SCHEMES)}"
            )
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,40}[a-z0-9])?", self.model_name):
            raise ParamError(
                f"model_name={self.model_name!r}: lowercase letters, digits and '-', starting with a letter "
                "(it names the InferenceService too)"
            )
        if self.finetune_method not in ("full", "lora"):
            raise ParamError(f"finetune_method={self.finetune_method!r}: use full or lora")
        for name in ("finetune_steps", "batch_size", "min_requests"):
            if getattr(self, name) <= 0:
                raise ParamError(f"{name}={getattr(self, name)!r}: must be a positive integer")
        if not 0 < self.learning_rate < 1:
            raise ParamError(f"learning_rate={self.learning_rate!r}: must be between 0 and 1")
        if not 0 <= self.max_accuracy_drop_points <= 100:
            raise ParamError(f"max_accuracy_drop_points={self.max_accuracy_drop_points!r}: must be 0..100")
        if self.max_perplexity_rise_pct < 0:
            raise ParamError(f"max_perplexity_rise_pct={self.max_perplexity_rise_pct!r}: must be >= 0")
        if not 0 <= self.min_accuracy <= 100:
            raise ParamError(f"min_accuracy={self.min_accuracy!r}: must be 0..100 (percent)")
        if not 0 < self.max_error_rate < 1:
            raise ParamError(f"max_error_rate={self.max_error_rate!r}: must be between 0 and 1")
        if self.max_latency_ratio < 1:
            raise ParamError(f"max_latency_ratio={self.max_latency_ratio!r}: must be >= 1")
        if self.load_rps < 0:
            raise ParamError(f"load_rps={self.load_rps!r}: must be >= 0 (0 sends no synthetic traffic)")
        if self.analysis_interval_s <= 0:
            raise ParamError(f"analysis_interval_s={self.analysis_interval_s!r}: must be positive")
        parse_steps(self.traffic_steps)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


# Where the compiled pipeline (a cluster serving real users) departs from the embedded run, and why.
CLUSTER_OVERRIDES: dict = {
    "analysis_interval_s": 60.0,  # a minute of real traffic per look (Flagger's default interval is 1m)
    "min_requests": 50,  # per revision per step: enough for the judge on production traffic
    "load_rps": 0.0,  # the service's users are the traffic; no synthetic load unless asked
}


def cluster_defaults() -> ReleaseParams:
    """The compiled pipeline's defaults: :class:`ReleaseParams` with :data:`CLUSTER_OVERRIDES`."""
    return replace(ReleaseParams(), **CLUSTER_OVERRIDES)
