"""OpenAI-compatible routes added to KServe's FastAPI app.

KServe 0.21's own OpenAI layer imports vLLM, which cannot be installed here, so these
routes are ours; the response bodies are the official ``openai`` package's pydantic
types. Routes: ``GET /openai/v1/models``, ``POST /openai/v1/completions``,
``POST /openai/v1/chat/completions`` (both stream as SSE with ``stream: true``).

Every refusal is a 4xx with ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal, Union

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from openai.types import Completion, CompletionChoice, CompletionUsage
from openai.types import Model as OpenAIModel
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice as ChatChoice
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from serving.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    PayloadTooLargeError,
    ServingError,
    UnsupportedParameterError,
    error_body,
    error_headers,
    http_status,
)
from serving.runtime.engine import FINISH_LENGTH, FINISH_STOP
from serving.runtime.limits import PARSED_BODY_KEY
from serving.runtime.model import LLMModel
from serving.runtime import vllm_compat
from serving.runtime.vllm_compat import VLLMChatExtensions, VLLMExtensions, VLLMStreamOptions
from serving.runtime.openapi_docs import route_docs
from serving.runtime.validation import load_json

MAX_BODY_BYTES = 1 << 20  # 1 MiB: far above any prompt the context allows

Number = Union[StrictInt, StrictFloat]


StreamOptions = VLLMStreamOptions  # include_usage, and vLLM's continuous_usage_stats


class _Common(VLLMExtensions):
    """Fields shared by completions and chat completions."""

    model_config = ConfigDict(extra="forbid")

    model: StrictStr
    max_tokens: StrictInt | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = None
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    user: StrictStr | None = None
    ignore_eos: StrictBool = False  # extension (as in vLLM): generate exactly max_tokens tokens
    # Known OpenAI parameters this server does not implement: refused unless neutral.
    n: StrictInt | None = None
    logprobs: Any = None
    logit_bias: dict[str, Any] | None = None
    presence_penalty: Number | None = None
    frequency_penalty: Number | None = None


class CompletionRequest(_Common):
    """``POST /openai/v1/completions`` body."""

    prompt: StrictStr | list[StrictStr] | list[StrictInt]
    best_of: StrictInt | None = None
    echo: StrictBool | None = None
    suffix: StrictStr | None = None


class ChatMessage(BaseModel):
    """One chat message; content is a string or a list of text parts."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr | list[dict[str, Any]]
    name: StrictStr | None = None


class ChatRequest(_Common, VLLMChatExtensions):
    """``POST /openai/v1/chat/completions`` body."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = None
    top_logprobs: StrictInt | None = None
    tools: Any = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None


def _refuse_unsupported(req: _Common) -> None:
    def refuse(param: str, what: str) -> None:
        raise UnsupportedParameterError(
            f"{param}: {what} is not supported by this server; remove it from the request",
            param=param,
            code="unsupported_parameter",
        )

    if req.n not in (None, 1):
        refuse("n", f"n={req.n} (several choices per request)")
    if req.logprobs not in (None, False, 0):
        refuse("logprobs", "returning log probabilities")
    if req.logit_bias:
        refuse("logit_bias", "logit bias")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(req, name) not in (None, 0, 0.0):
            refuse(name, f"a non-zero {name}")
    if isinstance(req, CompletionRequest):
        if req.best_of not in (None, 1):
            refuse("best_of", f"best_of={req.best_of}")
        if req.echo:
            refuse("echo", "echoing the prompt")
        if req.suffix:
            refuse("suffix", "a suffix (insertion)")
    if isinstance(req, ChatRequest):
        if req.top_logprobs:
            refuse("top_logprobs", "returning log probabilities")
        if req.tools or req.tool_choice not in (None, "none"):
            refuse("tools", "tool calling")
        if req.response_format and req.response_format.get("type") != "text":
            refuse("response_format", "structured output")
    vllm_compat.refuse_unsupported(req, chat=isinstance(req, ChatRequest))
    if req.stream_options is not None and not req.stream:
        raise InvalidRequestError("stream_options is only allowed with stream: true", param="stream_options")


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "literal"}


def _is_type_tag(part: object) -> bool:
    text = str(part)
    return not isinstance(part, int) and (
        "[" in text or "-" in text or text.lower() in _TYPE_TAGS or text.startswith("function")
    )


def _validation_message(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    # Unions add the branch's type to the location ("prompt.str"); keep field names and indexes only.
    loc = ".".join(str(p) for p in err["loc"] if not _is_type_tag(p))
    if err["type"] == "extra_forbidden":
        return f"unknown parameter {loc!r}; remove it (see the OpenAI API reference for supported fields)", loc
    if err["type"] == "missing":
        return f"missing required parameter {loc!r}", loc
    given = err.get("input")
    shown = json.dumps(given)[:60] if isinstance(given, (str, int, float, bool, list, dict, type(None))) else "?"
    return f"invalid value for {loc!r}: {err['msg']} (got {shown})", loc


async def read_json(request: Request) -> dict:
    """Read a JSON object body, at most :data:`MAX_BODY_BYTES`.

    The server's :class:`~serving.runtime.limits.RequestGuard` has already parsed and checked it
    (depth, number range, Unicode); without the guard it is parsed here with the same checks.

    Raises:
        PayloadTooLargeError, InvalidRequestError.
    """
    if PARSED_BODY_KEY in request.scope:
        body = request.scope[PARSED_BODY_KEY]
        if not isinstance(body, dict):
            raise InvalidRequestError(
                f"the request body must be a JSON object, got {type(body).__name__}", code="invalid_json"
            )
        return body
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise PayloadTooLargeError(f"the request body exceeds {MAX_BODY_BYTES} bytes", code="payload_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLargeError(f"the request body exceeds {MAX_BODY_BYTES} bytes", code="payload_too_large")
        chunks.append(chunk)
    body = load_json(b"".join(chunks))
    if not isinstance(body, dict):
        raise InvalidRequestError(
            f"the request body must be a JSON object, got {type(body).__name__}", code="invalid_json"
        )
    return body


def _parse(model_cls: type[_Common], body: dict) -> Any:
    try:
        req = model_cls.model_validate(body)
    except ValidationError as exc:
        message, loc = _validation_message(exc)
        raise InvalidRequestError(message, param=loc or None, code="invalid_value") from exc
    _refuse_unsupported(req)
    return req


def error_response(exc: ServingError) -> JSONResponse:
    """Render a serving error as an OpenAI error response."""
    status, _ = http_status(exc)
    return JSONResponse(error_body(exc), status_code=int(status), headers=error_headers(exc))


def _dump(obj: BaseModel) -> dict:
    """JSON-ready dict; keeps ``finish_reason: null`` in stream chunks, drops other unset fields."""
    data = obj.model_dump(mode="json", exclude_none=True, warnings=False)
    for choice in data.get("choices", []):
        choice.setdefault("finish_reason", None)
    return data


def _sse(obj: BaseModel | dict) -> str:
    data = obj.model_dump_json(exclude_none=True) if isinstance(obj, BaseModel) else json.dumps(obj)
    return f"data: {data}\n\n"


async def _collect(model: LLMModel, handle, deadline):
    """A non-streamed request: wait for its events and join their text; returns (text, last event)."""
    parts, ev = [], None
    while ev is None or ev.finish_reason is None:
        ev = await model.next_event(handle, deadline)
        parts.append(ev.text)
    return "".join(parts), ev


def build_router(model: LLMModel) -> APIRouter:
    """The OpenAI routes for one served model.

    Args:
        model: the loaded :class:`LLMModel`.
    """
    router = APIRouter(prefix="/openai/v1")

    def check_model(name: str) -> None:
        if name != model.name:
            raise ModelNotFoundError(
                f"model {name!r} is not served here; this server serves {model.name!r} (see GET /openai/v1/models)",
                param="model",
                code="model_not_found",
            )

    def usage(prompt_tokens: int, completion_tokens: int) -> CompletionUsage:
        return CompletionUsage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )

    @router.get("/models")
    async def list_models() -> JSONResponse:
        card = OpenAIModel(id=model.name, created=model.created, object="model", owned_by="llmops")
        return JSONResponse({"object": "list", "data": [card.model_dump()]})

    @router.post("/completions", **route_docs(CompletionRequest))
    async def completions(request: Request):
        try:
            req: CompletionRequest = _parse(CompletionRequest, await read_json(request))
            check_model(req.model)
            prompt = req.prompt
            if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
                ids = model.check_prompt_ids(prompt)
            else:
                if isinstance(prompt, list):
                    if len(prompt) != 1:
                        raise UnsupportedParameterError(
                            f"prompt: a list of {len(prompt)} prompts is not supported; send one prompt per request",
                            param="prompt",
                            code="unsupported_parameter",
                        )
                    prompt = prompt[0]
                ids = await model.encode_text_async(prompt)
            params = model.sampling_params(
                len(ids), req.max_tokens, 16, req.temperature, req.top_p, req.stop, req.seed, req.ignore_eos
            )
            params = vllm_compat.apply_sampling(params, req)
            deadline = model.deadline()
            handle = model.submit(ids, params, stream=bool(req.stream))
        except ServingError as exc:
            return error_response(exc)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        # The official type gives the envelope once; stream chunks only swap the choice.
        envelope = _dump(
            Completion.model_construct(id=rid, object="text_completion", created=created, model=model.name, choices=[])
        )

        def chunk(text: str, finish: str | None) -> dict:
            return {**envelope, "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]}

        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            continuous = include_usage and req.stream_options.continuous_usage_stats

            async def stream() -> AsyncIterator[str]:
                try:
                    while True:
                        try:
                            ev = await model.next_event(handle, deadline)
                        except ServingError as exc:
                            yield _sse(error_body(exc))
                            break
                        if ev.text or ev.finish_reason:
                            out = chunk(ev.text, ev.finish_reason)
                            if continuous:
                                out["usage"] = usage(ev.prompt_tokens, ev.completion_tokens).model_dump()
                            yield _sse(out)
                        if ev.finish_reason:
                            if include_usage:  # as OpenAI and vLLM: one more chunk, no choices, the whole usage
                                whole = usage(ev.prompt_tokens, ev.completion_tokens).model_dump()
                                yield _sse({**envelope, "choices": [], "usage": whole})
                            break
                    yield "data: [DONE]\n\n"
                finally:
                    handle.cancel()

            return StreamingResponse(stream(), media_type="text/event-stream")
        try:
            text, ev = await _collect(model, handle, deadline)
        except ServingError as exc:
            return error_response(exc)
        finish = ev.finish_reason if ev.finish_reason in (FINISH_STOP, FINISH_LENGTH) else "stop"
        out = Completion(
            id=rid,
            object="text_completion",
            created=created,
            model=model.name,
            choices=[CompletionChoice(index=0, text=text, finish_reason=finish, logprobs=None)],  # type: ignore[arg-type]
            usage=usage(ev.prompt_tokens, ev.completion_tokens),
        )
        return JSONResponse(_dump(out))

    @router.post("/chat/completions", **route_docs(ChatRequest))
    async def chat_completions(request: Request):
        try:
            req: ChatRequest = _parse(ChatRequest, await read_json(request))
            check_model(req.model)
            if req.max_tokens is not None and req.max_completion_tokens is not None:
                raise InvalidRequestError(
                    "set either max_tokens or max_completion_tokens, not both", param="max_completion_tokens"
                )
            messages = [_message_dict(m, i) for i, m in enumerate(req.messages)]
            ids = await model.chat_prompt_async(messages)
            limit_param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
            params = model.sampling_params(
                len(ids),
                req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens,
                None,
                req.temperature,
                req.top_p,
                req.stop,
                req.seed,
                req.ignore_eos,
                max_tokens_param=limit_param,
            )
            params = vllm_compat.apply_sampling(params, req)
            deadline = model.deadline()
            handle = model.submit(ids, params, stream=bool(req.stream))
        except ServingError as exc:
            return error_response(exc)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            continuous = include_usage and req.stream_options.continuous_usage_stats

            envelope = _dump(
                ChatCompletionChunk.model_construct(
                    id=rid, object="chat.completion.chunk", created=created, model=model.name, choices=[]
                )
            )

            def chunk(delta: dict, finish: str | None) -> dict:
                return {**envelope, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

            async def stream() -> AsyncIterator[str]:
                try:
                    yield _sse(chunk({"role": "assistant", "content": ""}, None))
                    while True:
                        try:
                            ev = await model.next_event(handle, deadline)
                        except ServingError as exc:
                            yield _sse(error_body(exc))
                            break
                        if ev.text or ev.finish_reason:
                            out = chunk({"content": ev.text}, ev.finish_reason)
                            if continuous:
                                out["usage"] = usage(ev.prompt_tokens, ev.completion_tokens).model_dump()
                            yield _sse(out)
                        if ev.finish_reason:
                            if include_usage:
                                final = ChatCompletionChunk(
                                    id=rid,
                                    object="chat.completion.chunk",
                                    created=created,
                                    model=model.name,
                                    choices=[],
                                    usage=usage(ev.prompt_tokens, ev.completion_tokens),
                                )
                                yield _sse(_dump(final))
                            break
                    yield "data: [DONE]\n\n"
                finally:
                    handle.cancel()

            return StreamingResponse(stream(), media_type="text/event-stream")
        try:
            text, ev = await _collect(model, handle, deadline)
        except ServingError as exc:
            return error_response(exc)
        out = ChatCompletion(
            id=rid,
            object="chat.completion",
            created=created,
            model=model.name,
            choices=[
                ChatChoice(
                    index=0,
                    message=ChatCompletionMessage(role="assistant", content=text),
                    finish_reason=ev.finish_reason,  # type: ignore[arg-type]
                )
            ],
            usage=usage(ev.prompt_tokens, ev.completion_tokens),
        )
        return JSONResponse(_dump(out))

    outer = APIRouter()

    @outer.get("/openai/health")
    async def health():
        # vLLM's GET /health beside /v1 (GuideLLM probes {target}/health, target without /v1).
        ok = await model.healthy()
        return JSONResponse({} if ok else {"status": "unhealthy"}, status_code=200 if ok else 503)

    outer.include_router(router)
    return outer


def _message_dict(msg: ChatMessage, index: int) -> dict[str, str]:
    content = msg.content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise UnsupportedParameterError(
                    f"messages[{index}].content[{j}]: only text parts are supported "
                    f'({{"type": "text", "text": "..."}})',
                    param=f"messages.{index}.content",
                    code="unsupported_parameter",
                )
            texts.append(part["text"])
        content = "".join(texts)
    if not content and msg.role == "user":
        raise InvalidRequestError(f"messages[{index}].content must not be empty", param=f"messages.{index}.content")
    role = "system" if msg.role == "developer" else msg.role
    return {"role": role, "content": content}
