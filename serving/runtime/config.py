"""Typed configuration of the LLM model server (parsed from argv in ``serving.__main__``)."""

from __future__ import annotations

from llmops_core.errors import LlmopsError

from dataclasses import dataclass, replace

from serving.errors import InvalidRequestError


class ConfigError(LlmopsError, ValueError):
    """A server option is out of range; the message names the flag and the fix."""


KV_CACHES = ("slots", "concat")


@dataclass(frozen=True)
class EngineConfig:
    """How the generation worker batches and bounds work."""

    max_batch_size: int = 16  # most sequences decoded together in one forward pass
    max_batch_wait_ms: float = 2.0  # when idle, wait this long for more arrivals before starting
    max_queue: int = 64  # most requests waiting for a batch slot; beyond it: 429
    max_prompt_tokens: int | None = None  # None: max_total_tokens - 1
    max_total_tokens: int | None = None  # None: the model's context length
    request_timeout_s: float = 60.0  # end-to-end limit per request (queue wait included)
    # requests generated before the server reports ready (one batch, then one alone): the first forward
    # passes of a fresh process are several times slower (allocator, kernel selection); 0 skips it
    warmup_requests: int = 4
    # where the running batch's KV cache lives: "slots" (preallocated batch slots, serving.runtime.kv_slots)
    # or "concat" (transformers' DynamicCache, concatenated per step); models whose cache layers the slots
    # cannot hold (sliding window, linear attention) use "concat" whatever this says
    kv_cache: str = KV_CACHES[0]

    def validate(self) -> "EngineConfig":
        """Check ranges; return self so calls chain.

        Raises:
            ConfigError: naming the flag at fault.
        """
        if self.max_batch_size < 1:
            raise ConfigError(f"--max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_batch_wait_ms < 0:
            raise ConfigError(f"--max_batch_wait_ms must be >= 0, got {self.max_batch_wait_ms}")
        if self.max_queue < 1:
            raise ConfigError(f"--max_queue must be >= 1, got {self.max_queue}")
        if self.max_total_tokens is not None and self.max_total_tokens < 2:
            raise ConfigError(f"--max_total_tokens must be >= 2, got {self.max_total_tokens}")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ConfigError(f"--max_prompt_tokens must be >= 1, got {self.max_prompt_tokens}")
        if (
            self.max_prompt_tokens is not None
            and self.max_total_tokens is not None
            and self.max_prompt_tokens >= self.max_total_tokens
        ):
            raise ConfigError(
                f"--max_prompt_tokens ({self.max_prompt_tokens}) must be below --max_total_tokens "
                f"({self.max_total_tokens}) to leave room for at least one generated token"
            )
        if self.request_timeout_s <= 0:
            raise ConfigError(f"--request_timeout_s must be > 0, got {self.request_timeout_s}")
        if self.warmup_requests < 0:
            raise ConfigError(f"--warmup_requests must be >= 0, got {self.warmup_requests}")
        if self.kv_cache not in KV_CACHES:
            raise ConfigError(f"--kv_cache must be one of {', '.join(KV_CACHES)}, got {self.kv_cache!r}")
        return self

    def resolved(self, model_context: int) -> "EngineConfig":
        """Fill the token limits from the model's context length and check them against it.

        Args:
            model_context: the model's maximum positions (``max_position_embeddings``).

        Raises:
            ConfigError: if a limit exceeds what the model can attend to.
        """
        total = self.max_total_tokens if self.max_total_tokens is not None else model_context
        if total > model_context:
            raise ConfigError(
                f"--max_total_tokens {total} exceeds the model's context length {model_context}; "
                f"use a value <= {model_context}"
            )
        prompt = self.max_prompt_tokens if self.max_prompt_tokens is not None else total - 1
        return replace(self, max_prompt_tokens=prompt, max_total_tokens=total).validate()


@dataclass(frozen=True)
class FaultConfig:
    """TEST-ONLY fault injection for canary analysis tests. Off by default; never set in production."""

    latency_ms: float = 0.0  # extra latency added to every inference request
    error_rate: float = 0.0  # share of inference requests answered with HTTP 500
    seed: int | None = None  # seeds the error draw, for reproducible tests
    latency_share: float = 1.0  # share of requests that get latency_ms (below 1: a tail regression)

    def validate(self) -> "FaultConfig":
        """Raises ConfigError when a value is out of range."""
        if self.latency_ms < 0:
            raise ConfigError(f"--fault_latency_ms must be >= 0, got {self.latency_ms}")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ConfigError(f"--fault_error_rate must be within [0, 1], got {self.error_rate}")
        if not 0.0 <= self.latency_share <= 1.0:
            raise ConfigError(f"--fault_latency_share must be within [0, 1], got {self.latency_share}")
        return self

    @property
    def enabled(self) -> bool:
        """True when any fault is switched on."""
        return self.latency_ms > 0 or self.error_rate > 0


@dataclass(frozen=True)
class SamplingParams:
    """Per-request generation settings, honoured inside a shared batch."""

    max_tokens: int  # most tokens to generate
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # nucleus sampling mass
    stop: tuple[str, ...] = ()  # stop sequences; output is cut before the first match
    seed: int | None = None  # seeds this request's own torch.Generator
    ignore_eos: bool = False  # keep generating past the end-of-sequence token
    # vLLM's sampling extensions (vllm/entrypoints/openai/protocol.py, "chat-completion-sampling-params").
    top_k: int = 0  # sample among the k most likely tokens; 0 or -1: all
    min_p: float = 0.0  # drop tokens below min_p x the top token's probability
    repetition_penalty: float = 1.0  # > 1 discourages tokens of the prompt and output (CTRL-style, as vLLM)
    min_tokens: int = 0  # eos and stop_token_ids are suppressed until this many tokens are generated
    stop_token_ids: tuple[int, ...] = ()  # generation also stops at these tokens
    include_stop_str_in_output: bool = False  # keep the matched stop string (or stop token's text) in the output

    def validate(self) -> "SamplingParams":
        """Raises InvalidRequestError naming the parameter at fault."""
        if self.max_tokens < 1:
            raise InvalidRequestError(
                f"max_tokens must be >= 1, got {self.max_tokens}", param="max_tokens", code="invalid_value"
            )
        if not 0.0 <= self.temperature <= 2.0:
            raise InvalidRequestError(
                f"temperature must be within [0, 2], got {self.temperature}", param="temperature", code="invalid_value"
            )
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidRequestError(
                f"top_p must be within (0, 1], got {self.top_p}", param="top_p", code="invalid_value"
            )
        if len(self.stop) > 4:
            raise InvalidRequestError(
                f"at most 4 stop sequences are allowed, got {len(self.stop)}", param="stop", code="invalid_value"
            )
        if any(not s for s in self.stop):
            raise InvalidRequestError("stop sequences must be non-empty strings", param="stop", code="invalid_value")
        if self.top_k < -1:
            raise InvalidRequestError(
                f"top_k must be -1, 0 (all tokens) or >= 1, got {self.top_k}", param="top_k", code="invalid_value"
            )
        if not 0.0 <= self.min_p <= 1.0:
            raise InvalidRequestError(f"min_p must be within [0, 1], got {self.min_p}", param="min_p", code="invalid_value")
        if not 0.0 < self.repetition_penalty <= 2.0:
            raise InvalidRequestError(
                f"repetition_penalty must be within (0, 2], got {self.repetition_penalty}",
                param="repetition_penalty",
                code="invalid_value",
            )
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise InvalidRequestError(
                f"min_tokens must be within [0, max_tokens={self.max_tokens}], got {self.min_tokens}",
                param="min_tokens",
                code="invalid_value",
            )
        if len(self.stop_token_ids) > 16 or any(t < 0 for t in self.stop_token_ids):
            raise InvalidRequestError(
                "stop_token_ids must be at most 16 non-negative token ids", param="stop_token_ids", code="invalid_value"
            )
        return self
