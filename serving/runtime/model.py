"""The KServe model: a Hugging Face causal LM behind a batching :class:`GenerationEngine`.

Serves KServe's V1 (``{"instances": [text, ...]}``) and V2 (BYTES tensor in, BYTES
tensor ``text_output`` out) protocols through ``predict``; the OpenAI routes in
:mod:`serving.runtime.openai_api` call :meth:`LLMModel.generate` directly.
"""

from __future__ import annotations

from llmops_core.errors import LlmopsError

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from kserve import Model
from kserve.logging import logger
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from serving.errors import (
    ClientDisconnectedError,
    ContextLengthError,
    InvalidRequestError,
    RequestTimeoutError,
    ServingError,
)
from serving.runtime.config import EngineConfig, SamplingParams
from serving.runtime.engine import FINISH_ERROR, FINISH_TIMEOUT, GenerationEngine, GenerationEvent, RequestHandle
from serving.runtime.limits import RequestLimits, client_gone
from serving.runtime.metrics import PROBE_REQUEST, RuntimeMetrics
from serving.runtime.validation import SEED_MAX, SEED_MIN, check_text

# Below this temperature, sampling is greedy (as vLLM's _SAMPLING_EPS): logits / 1e-40 overflow to inf.
MIN_TEMPERATURE = 1e-5
# Below this nucleus mass, only the most likely token is kept (float32 rounds 1e-300 to 0).
MIN_TOP_P = 1e-6


class ModelLoadError(LlmopsError, RuntimeError):
    """The model folder cannot be served; the message says what is missing."""


@dataclass(frozen=True)
class Generation:
    """A finished, non-streamed generation."""

    text: str  # generated text (stop sequence and eos excluded)
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int  # tokens in the prompt
    completion_tokens: int  # tokens generated


# Parameters a V1/V2 request may pass (request "parameters"), with their types.
V2_PARAMETERS: dict[str, tuple[type, ...]] = {
    "max_tokens": (int,),
    "temperature": (int, float),
    "top_p": (int, float),
    "stop": (str, list),
    "seed": (int,),
    "ignore_eos": (bool,),
}


class LLMModel(Model):
    """A causal LM served by KServe with batched generation.

    Args:
        name: the served model name (``--model_name``).
        model_dir: Hugging Face model folder with safetensors weights (``--model_dir``).
        model_version: version label for metrics (``--model_version``).
        engine_config: batching and limits.
        torch_dtype: dtype to load the weights in (default: as stored).
        trust_remote_code: allow custom modelling code from the folder (off by default).
        clock: monotonic clock, injectable for tests.
        limits: request limits (the prompt character limit is checked before tokenizing).
    """

    def __init__(
        self,
        name: str,
        model_dir: str | Path,
        model_version: str = "unversioned",
        engine_config: EngineConfig | None = None,
        torch_dtype: str | None = None,
        trust_remote_code: bool = False,
        clock=time.monotonic,
        limits: RequestLimits | None = None,
    ):
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.model_version = model_version
        self.engine_config = (engine_config or EngineConfig()).validate()
        self.torch_dtype = torch_dtype
        self.trust_remote_code = trust_remote_code
        self.clock = clock
        self.limits = (limits or RequestLimits()).validate()
        # Tokenizing and chat templating run here, off the event loop: a long prompt delays no other request.
        self._tokenize_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="llmops-tokenize")
        self.metrics = RuntimeMetrics(name, model_version)
        self.created = int(time.time())
        self.tokenizer = None
        # Not ``self.engine``: KServe reserves that flag for models whose engine it starts itself.
        self._engine: GenerationEngine | None = None
        self.hf_model = None

    @property
    def generation_engine(self) -> GenerationEngine:
        """The running engine (after :meth:`load`)."""
        if self._engine is None:
            raise RuntimeError("model not loaded: call load() first")
        return self._engine

    def load(self) -> bool:
        """Load tokenizer and weights (safetensors only) and start the generation worker.

        Raises:
            ModelLoadError: the folder is missing, has no safetensors weights, or no tokenizer.
        """
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not self.model_dir.is_dir():
            raise ModelLoadError(
                f"model folder {self.model_dir} does not exist; pass --model_dir (KServe mounts models at /mnt/models)"
            )
        if not any(self.model_dir.glob("*.safetensors")):
            raise ModelLoadError(
                f"no *.safetensors weights in {self.model_dir}; this server loads safetensors only "
                "(convert pickle checkpoints with safetensors' convert script first)"
            )
        started = time.monotonic()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                self.model_dir, trust_remote_code=self.trust_remote_code, local_files_only=True
            )
        except Exception as exc:
            raise ModelLoadError(f"cannot load a tokenizer from {self.model_dir}: {exc}") from exc
        kwargs: dict[str, Any] = {"use_safetensors": True, "trust_remote_code": self.trust_remote_code}
        if self.torch_dtype:
            dtype = getattr(torch, self.torch_dtype, None)
            if not isinstance(dtype, torch.dtype):
                raise ModelLoadError(f"--dtype {self.torch_dtype!r} is not a torch dtype; use e.g. float32 or bfloat16")
            kwargs["dtype"] = dtype
        self.hf_model = AutoModelForCausalLM.from_pretrained(self.model_dir, local_files_only=True, **kwargs).eval()
        context = _context_length(self.hf_model.config)
        self.engine_config = self.engine_config.resolved(context)
        self._engine = GenerationEngine(
            self.hf_model, self.tokenizer, self.engine_config, observer=self.metrics, clock=self.clock
        )
        self._engine.start()
        warm = self.engine_config.warmup_requests
        if warm:
            prompt = self.tokenizer.encode("Warm up the model server.", add_special_tokens=True)[: self.engine_config.max_prompt_tokens]
            try:
                took = self._engine.warmup(prompt or [self._engine.pad_token_id], warm)
            except RuntimeError as exc:
                self._engine.stop(timeout=5)
                raise ModelLoadError(f"{exc}; the model loads but cannot generate (start with --warmup_requests 0 to see it per request)") from exc
            logger.info("warmed up with %d request(s) in %.2fs (not in metrics)", warm + 1, took)
        self.ready = True
        logger.info(
            "loaded %s (version %s) from %s in %.1fs: context %d tokens, max_batch_size %d, max_queue %d",
            self.name,
            self.model_version,
            self.model_dir,
            time.monotonic() - started,
            context,
            self.engine_config.max_batch_size,
            self.engine_config.max_queue,
        )
        return self.ready

    def stop(self) -> None:
        """Finish queued and running requests, then stop the worker (KServe calls this on shutdown)."""
        self.ready = False
        if self._engine is not None:
            self._engine.stop(timeout=self.engine_config.request_timeout_s)

    async def healthy(self) -> bool:
        """Ready while the generation worker runs."""
        return self.ready and self._engine is not None and self._engine.alive

    # ---- shared request handling ---------------------------------------------------------

    def encode_text(self, text: str, param: str = "prompt") -> list[int]:
        """Tokenize a prompt and check it against ``max_prompt_tokens``.

        Raises:
            InvalidRequestError: empty prompt.
            ContextLengthError: too many tokens.
        """
        self.check_prompt_text(text, param)
        ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        return self.check_prompt_ids(ids, param)

    def check_prompt_text(self, text: str, param: str = "prompt") -> None:
        """Cheap checks before tokenizing: non-empty, within the character limit, valid Unicode.

        Raises:
            InvalidRequestError: empty or a lone surrogate.
            ContextLengthError: longer than ``--max_prompt_chars``.
        """
        if not text:
            raise InvalidRequestError(f"{param} must not be empty", param=param, code="empty_prompt")
        limit = self.limits.prompt_chars(self.engine_config.max_prompt_tokens or 1)
        if len(text) > limit:
            raise ContextLengthError(
                f"{param} has {len(text)} characters, more than the limit of {limit} (--max_prompt_chars); "
                "shorten the prompt",
                param=param,
                code="context_length_exceeded",
            )
        check_text(text, param)

    async def encode_text_async(self, text: str, param: str = "prompt") -> list[int]:
        """:meth:`encode_text` with the tokenizer run off the event loop (limits checked first, on it)."""
        self.check_prompt_text(text, param)
        return await asyncio.get_running_loop().run_in_executor(self._tokenize_pool, self.encode_text, text, param)

    async def chat_prompt_async(self, messages: list[dict[str, str]]) -> list[int]:
        """:meth:`chat_prompt` off the event loop, after checking the messages' total length."""
        for i, m in enumerate(messages):
            check_text(m["content"], f"messages.{i}.content")
        total = sum(len(m["content"]) for m in messages)
        limit = self.limits.prompt_chars(self.engine_config.max_prompt_tokens or 1)
        if total > limit:
            raise ContextLengthError(
                f"messages hold {total} characters, more than the limit of {limit} (--max_prompt_chars); "
                "shorten them",
                param="messages",
                code="context_length_exceeded",
            )
        return await asyncio.get_running_loop().run_in_executor(self._tokenize_pool, self.chat_prompt, messages)

    def check_prompt_ids(self, ids: Sequence[int], param: str = "prompt") -> list[int]:
        """Check token ids: non-empty, in the vocabulary, within ``max_prompt_tokens``."""
        if not ids:
            raise InvalidRequestError(f"{param} must not be empty", param=param, code="empty_prompt")
        vocab = len(self.tokenizer)
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise InvalidRequestError(
                f"{param} holds token ids outside the vocabulary [0, {vocab}): {bad[:5]}", param=param
            )
        limit = self.engine_config.max_prompt_tokens
        if len(ids) > limit:
            raise ContextLengthError(
                f"{param} has {len(ids)} tokens, more than the limit of {limit} (--max_prompt_tokens); "
                "shorten the prompt",
                param=param,
                code="context_length_exceeded",
            )
        return list(ids)

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """Render chat messages with the tokenizer's chat template and tokenize them."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise InvalidRequestError(
                f"model {self.name} has no chat template; use /openai/v1/completions instead",
                param="messages",
                code="no_chat_template",
            )
        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # jinja raise_exception() or a template error: the messages do not fit it
            raise InvalidRequestError(
                f"messages do not fit the model's chat template: {exc}", param="messages"
            ) from exc
        return self.encode_text(text, param="messages")

    def sampling_params(
        self,
        prompt_len: int,
        max_tokens: int | None,
        default_max_tokens: int | None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        ignore_eos: bool = False,
        max_tokens_param: str = "max_tokens",
    ) -> SamplingParams:
        """Build validated sampling parameters and check prompt + max_tokens fits the context.

        Args:
            prompt_len: tokens in the prompt.
            max_tokens: requested limit, or None for the default.
            default_max_tokens: default limit (None: all the room left in the context).
            max_tokens_param: the request field name, for error messages.

        Raises:
            InvalidRequestError / ContextLengthError: naming the parameter.
        """
        room = self.engine_config.max_total_tokens - prompt_len
        if max_tokens is None:
            max_tokens = room if default_max_tokens is None else min(default_max_tokens, room)
            if max_tokens < 1:
                raise ContextLengthError(
                    f"the prompt ({prompt_len} tokens) leaves no room to generate within "
                    f"{self.engine_config.max_total_tokens} tokens (--max_total_tokens); shorten it",
                    param="prompt",
                    code="context_length_exceeded",
                )
        elif max_tokens < 1:
            raise InvalidRequestError(
                f"{max_tokens_param} must be >= 1, got {max_tokens}", param=max_tokens_param, code="invalid_value"
            )
        elif max_tokens > room:
            raise ContextLengthError(
                f"prompt ({prompt_len} tokens) + {max_tokens_param} ({max_tokens}) exceeds the context limit of "
                f"{self.engine_config.max_total_tokens} tokens (--max_total_tokens); "
                f"set {max_tokens_param} to at most {max(room, 0)} or shorten the prompt",
                param=max_tokens_param,
                code="context_length_exceeded",
            )
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        temperature = 1.0 if temperature is None else temperature
        top_p = 1.0 if top_p is None else top_p
        if not 0.0 <= temperature <= 2.0:  # before float(): a huge int overflows it
            raise InvalidRequestError(
                f"temperature must be within [0, 2], got {temperature}", param="temperature", code="invalid_value"
            )
        if not 0.0 < top_p <= 1.0:
            raise InvalidRequestError(f"top_p must be within (0, 1], got {top_p}", param="top_p", code="invalid_value")
        if seed is not None and not SEED_MIN <= seed <= SEED_MAX:
            raise InvalidRequestError(
                f"seed must be within [{SEED_MIN}, {SEED_MAX}], got {seed}", param="seed", code="invalid_value"
            )
        for i, s in enumerate(stops):
            check_text(s, f"stop.{i}")
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=0.0 if temperature < MIN_TEMPERATURE else float(temperature),
            top_p=max(float(top_p), MIN_TOP_P),
            stop=stops,
            seed=seed,
            ignore_eos=ignore_eos,
        ).validate()

    def submit(self, prompt_ids: list[int], params: SamplingParams, stream: bool = True) -> RequestHandle:
        """Queue a generation (raises OverloadedError / ShuttingDownError)."""
        return self.generation_engine.submit(prompt_ids, params, stream=stream, observed=not PROBE_REQUEST.get())

    def deadline(self) -> float:
        """Monotonic time by which a request submitted now must finish."""
        return self.clock() + self.engine_config.request_timeout_s

    async def next_event(self, handle: RequestHandle, deadline: float) -> GenerationEvent:
        """Wait for the next event of a request, enforcing the request timeout.

        Raises:
            RequestTimeoutError: the deadline passed (the request is cancelled).
            ServingError: the generation failed.
        """
        gone = None if handle.stream else client_gone()  # streams: Starlette cancels them on disconnect
        try:
            async with asyncio.timeout(max(deadline - self.clock(), 0.001)):
                if gone is None:
                    event = await handle.next_events()
                else:
                    event = await _first_of(handle.next_events(), gone)
                    if event is None:
                        handle.cancel()  # the worker drops the row at its next step
                        raise ClientDisconnectedError("the client disconnected", code="client_disconnected")
        except TimeoutError:
            handle.cancel()
            event = GenerationEvent("", FINISH_TIMEOUT, 0, 0)
        except BaseException:
            handle.cancel()
            raise
        if event.finish_reason == FINISH_TIMEOUT:
            raise RequestTimeoutError(
                f"the request did not finish within {self.engine_config.request_timeout_s:g}s "
                "(--request_timeout_s); lower max_tokens or retry later",
                code="timeout",
            )
        if event.finish_reason == FINISH_ERROR:
            raise ServingError(f"generation failed: {event.error}", code="generation_failed")
        return event

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        """Generate to completion (non-streaming)."""
        deadline = self.deadline()
        handle = self.submit(prompt_ids, params, stream=False)
        parts: list[str] = []
        while True:
            event = await self.next_event(handle, deadline)
            parts.append(event.text)
            if event.finish_reason is not None:
                return Generation("".join(parts), event.finish_reason, event.prompt_tokens, event.completion_tokens)

    # ---- KServe V1 / V2 ------------------------------------------------------------------

    async def predict(self, payload: InferRequest | dict, headers: dict[str, str] | None = None):
        """V2: BYTES tensor of prompts in, BYTES ``text_output`` out; V1: ``instances`` of prompts.

        Generation parameters come from the request's ``parameters`` (see :data:`V2_PARAMETERS`).
        """
        if isinstance(payload, InferRequest):
            if not payload.inputs:
                raise InvalidRequestError("the request has no inputs; send one BYTES tensor of prompts", param="inputs")
            inp = payload.get_input_by_name("text_input") or payload.inputs[0]
            if inp.datatype != "BYTES":
                raise InvalidRequestError(
                    f"input {inp.name!r} has datatype {inp.datatype}; send prompts as a BYTES tensor",
                    param="inputs.datatype",
                )
            texts = _texts(inp.data, "inputs.data")
            texts_out = await self._generate_all(texts, _parameters(payload.parameters))
            out = InferOutput(name="text_output", shape=[len(texts_out)], datatype="BYTES", data=texts_out)
            return InferResponse(
                response_id=payload.id or "", model_name=self.name, infer_outputs=[out], model_version=self.model_version
            )
        if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
            raise InvalidRequestError('V1 requests need {"instances": ["prompt", ...]}', param="instances")
        texts = _texts(payload["instances"], "instances")
        return {"predictions": await self._generate_all(texts, _parameters(payload.get("parameters")))}

    async def _generate_all(self, texts: list[str], parameters: Mapping[str, Any]) -> list[str]:
        if not texts:
            raise InvalidRequestError("no prompts given; send at least one", param="inputs")
        if len(texts) > self.engine_config.max_queue:
            raise InvalidRequestError(
                f"{len(texts)} prompts in one request exceed --max_queue ({self.engine_config.max_queue}); "
                "split the request",
                param="inputs",
            )
        jobs = []
        for i, text in enumerate(texts):
            ids = await self.encode_text_async(text, param=f"inputs[{i}]")
            params = self.sampling_params(
                len(ids),
                parameters.get("max_tokens"),
                16,
                temperature=parameters.get("temperature", 0.0),
                top_p=parameters.get("top_p"),
                stop=parameters.get("stop"),
                seed=parameters.get("seed"),
                ignore_eos=bool(parameters.get("ignore_eos", False)),
            )
            jobs.append((ids, params))
        results = await asyncio.gather(*(self.generate(ids, p) for ids, p in jobs))
        return [r.text for r in results]


async def _first_of(events, gone: asyncio.Event):
    """Await ``events`` unless ``gone`` is set first (then None, with ``events`` cancelled)."""
    get, wait = asyncio.ensure_future(events), asyncio.ensure_future(gone.wait())
    try:
        done, _ = await asyncio.wait({get, wait}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (get, wait):
            if not task.done():
                task.cancel()
    return get.result() if get in done else None


def _context_length(config) -> int:
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ModelLoadError("the model config states no context length (max_position_embeddings); cannot bound requests")


def _texts(data: Any, param: str) -> list[str]:
    """Flatten V1/V2 data into a list of prompt strings, refusing anything else."""
    if isinstance(data, np.ndarray):
        data = data.tolist()
    if not isinstance(data, list):
        raise InvalidRequestError(f"{param} must be a list of strings", param=param)
    out: list[str] = []
    stack = list(reversed(data))
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, bytes):
            try:
                out.append(item.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise InvalidRequestError(f"{param} holds bytes that are not UTF-8", param=param) from exc
        elif isinstance(item, str):
            out.append(item)
        else:
            raise InvalidRequestError(
                f"{param} must hold strings, got {type(item).__name__} ({str(item)[:40]!r})", param=param
            )
    return out


def _parameters(params: Any) -> dict[str, Any]:
    """Check V1/V2 request parameters against :data:`V2_PARAMETERS`."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise InvalidRequestError("parameters must be an object", param="parameters")
    out = {}
    for key, value in params.items():
        if key not in V2_PARAMETERS:
            raise InvalidRequestError(
                f"unsupported parameter {key!r}; supported: {', '.join(sorted(V2_PARAMETERS))}",
                param=f"parameters.{key}",
            )
        kinds = V2_PARAMETERS[key]
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise InvalidRequestError(
                f"parameters.{key} must be {names}, got {type(value).__name__}", param=f"parameters.{key}"
            )
        if key == "stop" and isinstance(value, list) and not all(isinstance(s, str) for s in value):
            raise InvalidRequestError("parameters.stop must be a string or a list of strings", param="parameters.stop")
        out[key] = value
    return out
