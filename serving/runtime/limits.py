"""Request limits and the guard every HTTP request passes before KServe's or our routes.

:class:`RequestGuard` is one ASGI middleware, innermost around the app, that:

* refuses bodies over ``--max_body_bytes`` on every route (413), by ``Content-Length``
  before reading anything, and while reading chunked bodies;
* parses JSON bodies of the inference routes with :func:`serving.runtime.validation.load_json`
  (depth, integer and float range, lone surrogates: 400 naming the field), off the event
  loop for large bodies, and checks the V2 binary extension's sizes against the bytes sent;
* answers ``/v2/models/{m}/versions/{v}[/ready|/infer]`` for the served version (KServe 0.21
  raises ``NotImplementedError`` there, a 501) and 404 for any other version;
* keeps the model-repository control routes (``/v2/repository/models/{m}/load|unload``,
  registered unconditionally by KServe's ``register_v2_endpoints``) off unless the server
  was started with a token (``$LLMOPS_REPOSITORY_TOKEN``), then requires ``Authorization: Bearer``;
* watches the connection after the body is read, so a handler can tell that its client went
  away (:func:`client_gone`) and free the request's batch slot.
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import json
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

from serving.errors import (
    AuthenticationError,
    InvalidRequestError,
    ModelNotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ServingError,
    error_body,
    error_headers,
    http_status,
)
from serving.runtime.validation import MAX_JSON_DEPTH, load_json

REPOSITORY_TOKEN_ENV = "LLMOPS_REPOSITORY_TOKEN"
BINARY_HEADER = "inference-header-content-length"  # KServe/Triton binary tensor extension
REPOSITORY_PREFIX = "/v2/repository/"
JSON_ROUTES = re.compile(r"^/(openai/v1/(chat/)?completions|v2/models/[^/]+/infer|v1/models/[^/]+:(predict|explain))$")
VERSIONED = re.compile(r"^/v2/models/(?P<model>[^/]+)/versions/(?P<version>[^/]+)(?P<rest>/ready|/infer)?$")
PARSED_BODY_KEY = "llmops.json"  # scope key holding the validated JSON body for our own routes
_OFF_LOOP_BYTES = 64 * 1024  # parse bodies larger than this in a worker thread
_CLIENT_GONE: contextvars.ContextVar[asyncio.Event | None] = contextvars.ContextVar("llmops_client_gone", default=None)


@dataclass(frozen=True)
class RequestLimits:
    """Limits applied to every request before it reaches a handler."""

    max_body_bytes: int = 1 << 20  # largest request body on any route (413 beyond)
    max_prompt_chars: int | None = None  # longest prompt text before tokenizing; None: 64 x max_prompt_tokens
    max_json_depth: int = MAX_JSON_DEPTH  # deepest JSON nesting
    repository_token: str | None = field(default=None, repr=False)  # enables load/unload; never logged

    def validate(self) -> "RequestLimits":
        """Raises ConfigError naming the flag at fault."""
        from serving.runtime.config import ConfigError

        if self.max_body_bytes < 1024:
            raise ConfigError(f"--max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        if self.max_prompt_chars is not None and self.max_prompt_chars < 1:
            raise ConfigError(f"--max_prompt_chars must be >= 1, got {self.max_prompt_chars}")
        if self.repository_token is not None and len(self.repository_token) < 16:
            raise ConfigError(f"${REPOSITORY_TOKEN_ENV} must hold at least 16 characters (use a random token)")
        return self

    def prompt_chars(self, max_prompt_tokens: int) -> int:
        """The prompt character limit in force for a model allowing ``max_prompt_tokens``."""
        return self.max_prompt_chars if self.max_prompt_chars is not None else 64 * max_prompt_tokens


def client_gone() -> asyncio.Event | None:
    """Set once the client of the request being handled has disconnected (None outside a guarded request)."""
    return _CLIENT_GONE.get()


async def send_error(send, exc: ServingError) -> None:
    """Answer an ASGI request with a serving error's OpenAI-style body."""
    status, _ = http_status(exc)
    body = json.dumps(error_body(exc)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error_headers(exc).items()]
    await send({"type": "http.response.start", "status": int(status), "headers": headers})
    await send({"type": "http.response.body", "body": body})


def check_binary_extension(body: bytes, header: str, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Check a V2 binary-extension body: the JSON header length and each input's ``binary_data_size``.

    Raises:
        InvalidRequestError: naming the header or ``inputs.<i>.parameters.binary_data_size``.
    """
    if not header.isdigit() or int(header) > len(body):
        raise InvalidRequestError(
            f"{BINARY_HEADER}: {header[:30]!r} must be the byte length of the JSON part, between 0 and the "
            f"body length ({len(body)})",
            param=BINARY_HEADER,
        )
    split = int(header)
    request = load_json(body[:split], max_depth=max_depth)
    if not isinstance(request, dict):
        raise InvalidRequestError("the JSON part of a V2 request must be an object", code="invalid_json")
    remaining = len(body) - split
    declared = 0
    inputs = request.get("inputs")
    for i, inp in enumerate(inputs if isinstance(inputs, list) else ()):
        params = inp.get("parameters") if isinstance(inp, dict) else None
        if not isinstance(params, dict) or "binary_data_size" not in params:
            continue
        size = params["binary_data_size"]
        where = f"inputs.{i}.parameters.binary_data_size"
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidRequestError(f"{where} must be a non-negative integer, got {size!r}", param=where)
        declared += size
        if declared > remaining:
            raise InvalidRequestError(
                f"{where}: the inputs declare {declared} binary bytes so far but only {remaining} bytes follow "
                f"the JSON part ({BINARY_HEADER}: {split})",
                param=where,
            )
    if declared != remaining:
        raise InvalidRequestError(
            f"the inputs declare {declared} binary bytes (binary_data_size) but {remaining} bytes follow the "
            f"JSON part ({BINARY_HEADER}: {split}); they must match",
            param="inputs",
        )


class RequestGuard:
    """ASGI middleware applying :class:`RequestLimits` (see the module docstring).

    Args:
        app: the wrapped ASGI app.
        limits: the limits.
        model_version: the version this server serves (for ``/versions/{v}`` routes).
    """

    def __init__(self, app, limits: RequestLimits, model_version: str):
        self.app = app
        self.limits = limits
        self.model_version = model_version

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            scope = self._route(scope)
            body = await self._read_body(scope, receive)
            if body is not None:
                await self._check_body(scope, body)
        except ServingError as exc:
            await send_error(send, exc)
            return
        if body is None:
            await self.app(scope, receive, send)
            return
        await self._call_with_body(scope, receive, send, body)

    def _route(self, scope):
        path = scope["path"]
        if path.startswith(REPOSITORY_PREFIX):
            self._authorize(scope)
        m = VERSIONED.match(path)
        if m:
            self._check_version(m["model"], m["version"])
            new_path = f"/v2/models/{m['model']}{m['rest'] or ''}"
            scope = {**scope, "path": new_path, "raw_path": new_path.encode()}
        if scope["path"].startswith("/v2/models/") and b"model_version" in scope.get("query_string", b""):
            # KServe binds ?model_version= on the unversioned routes too, and raises NotImplementedError (501).
            query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            for key, value in query:
                if key == "model_version":
                    self._check_version(scope["path"].split("/")[3], value)
            kept = urlencode([(k, v) for k, v in query if k != "model_version"])
            scope = {**scope, "query_string": kept.encode("latin-1")}
        return scope

    def _check_version(self, model: str, version: str) -> None:
        if version != self.model_version:
            raise ModelNotFoundError(
                f"model {model!r} has no version {version[:64]!r} here; this server serves version "
                f"{self.model_version!r} (or leave the version out)",
                param="model_version",
                code="model_version_not_found",
            )

    def _authorize(self, scope) -> None:
        token = self.limits.repository_token
        if token is None:
            raise PermissionDeniedError(
                "the model repository control routes (load/unload) are switched off on this server; "
                f"start it with ${REPOSITORY_TOKEN_ENV} set to enable them behind that bearer token",
                code="control_routes_disabled",
            )
        headers = dict(scope.get("headers") or ())
        given = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise AuthenticationError(
                "the model repository control routes need 'Authorization: Bearer <token>' with the server's "
                f"${REPOSITORY_TOKEN_ENV}",
                code="invalid_token",
            )

    async def _read_body(self, scope, receive) -> bytes | None:
        """The whole body within the limit, or None for methods without one (nothing consumed)."""
        limit = self.limits.max_body_bytes
        headers = dict(scope.get("headers") or ())
        length = headers.get(b"content-length")
        too_large = PayloadTooLargeError(
            f"the request body exceeds {limit} bytes (--max_body_bytes); send a smaller request",
            param="body",
            code="payload_too_large",
        )
        if length is not None:
            if not length.isdigit():
                raise InvalidRequestError("Content-Length must be a non-negative integer", param="content-length")
            if int(length) > limit:
                raise too_large
        if scope["method"] in ("GET", "HEAD", "OPTIONS") and not length and b"transfer-encoding" not in headers:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InvalidRequestError("the client disconnected while sending the body", code="client_disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _check_body(self, scope, body: bytes) -> None:
        if not JSON_ROUTES.match(scope["path"]) or scope["method"] != "POST":
            return
        headers = dict(scope.get("headers") or ())
        binary = headers.get(BINARY_HEADER.encode())
        depth = self.limits.max_json_depth
        if binary is not None:
            check = lambda: check_binary_extension(body, binary.decode("latin-1"), depth)  # noqa: E731
        else:
            check = lambda: load_json(body, max_depth=depth)  # noqa: E731
        parsed = await asyncio.to_thread(check) if len(body) > _OFF_LOOP_BYTES else check()
        if binary is None:
            scope[PARSED_BODY_KEY] = parsed

    async def _call_with_body(self, scope, receive, send, body: bytes) -> None:
        gone = asyncio.Event()
        replayed = False

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    return

        watcher = asyncio.create_task(watch())

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        token = _CLIENT_GONE.set(gone)
        try:
            await self.app(scope, replay, send)
        finally:
            _CLIENT_GONE.reset(token)
            watcher.cancel()
