"""Domain errors of the serving runtime and the one table that maps them to HTTP.

Exception tree::

    ServingError                       500 server_error
    ├── InvalidRequestError            400 invalid_request_error   (bad JSON, wrong type, bad value)
    │   ├── UnsupportedParameterError  400 invalid_request_error   (n>1, logprobs, ...)
    │   └── ContextLengthError         400 invalid_request_error   (prompt / prompt+max_tokens too long)
    ├── PayloadTooLargeError           413 invalid_request_error
    ├── ModelNotFoundError             404 not_found_error
    ├── OverloadedError                429 rate_limit_error        (queue full; carries Retry-After)
    ├── ShuttingDownError              503 service_unavailable     (SIGTERM received, draining)
    ├── RequestTimeoutError            504 timeout_error           (--request_timeout_s exceeded)
    ├── InjectedFaultError             500 server_error            (test-only --fault_error_rate)
    ├── AuthenticationError            401 authentication_error    (control route without the right token)
    ├── PermissionDeniedError          403 permission_error        (control routes switched off)
    └── ClientDisconnectedError        499 client_closed_request   (the client went away; nobody reads it)

Every error renders as an OpenAI-style body
``{"error": {"message", "type", "param", "code"}}`` via :func:`error_body`.
"""

from __future__ import annotations

from llmops_core.errors import LlmopsError

from http import HTTPStatus


class ServingError(LlmopsError):
    """Base of all serving-runtime errors.

    Args:
        message: what went wrong and how to fix it.
        param: the request field at fault, if any.
        code: a short machine-readable code (OpenAI's ``error.code``).
    """

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequestError(ServingError):
    """The request is malformed or a value is out of range."""


class UnsupportedParameterError(InvalidRequestError):
    """A valid OpenAI parameter this server does not implement."""


class ContextLengthError(InvalidRequestError):
    """The prompt, or prompt plus max_tokens, exceeds the configured limits."""


class PayloadTooLargeError(ServingError):
    """The request body exceeds the size limit."""


class ModelNotFoundError(ServingError):
    """The request names a model this server does not serve."""


class OverloadedError(ServingError):
    """The waiting queue is full; retry later.

    Args:
        retry_after_s: seconds the client should wait (sent as ``Retry-After``).
    """

    def __init__(self, message: str, *, retry_after_s: int = 1, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after_s = retry_after_s


class ShuttingDownError(ServingError):
    """The server is draining after SIGTERM and accepts no new work."""


class RequestTimeoutError(ServingError):
    """The request did not finish within ``--request_timeout_s``."""


class InjectedFaultError(ServingError):
    """A deliberate failure from ``--fault_error_rate`` (canary tests only)."""


class AuthenticationError(ServingError):
    """A protected route was called without the right bearer token."""


class PermissionDeniedError(ServingError):
    """The route exists but is switched off on this server."""


class ClientDisconnectedError(ServingError):
    """The client closed its connection before the answer was ready (nginx's 499)."""


# Most specific class first; the first isinstance match wins.
HTTP_STATUS: tuple[tuple[type[ServingError], HTTPStatus, str], ...] = (
    (InvalidRequestError, HTTPStatus.BAD_REQUEST, "invalid_request_error"),
    (PayloadTooLargeError, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "invalid_request_error"),
    (ModelNotFoundError, HTTPStatus.NOT_FOUND, "not_found_error"),
    (OverloadedError, HTTPStatus.TOO_MANY_REQUESTS, "rate_limit_error"),
    (ShuttingDownError, HTTPStatus.SERVICE_UNAVAILABLE, "service_unavailable"),
    (RequestTimeoutError, HTTPStatus.GATEWAY_TIMEOUT, "timeout_error"),
    (InjectedFaultError, HTTPStatus.INTERNAL_SERVER_ERROR, "server_error"),
    (AuthenticationError, HTTPStatus.UNAUTHORIZED, "authentication_error"),
    (PermissionDeniedError, HTTPStatus.FORBIDDEN, "permission_error"),
    (ClientDisconnectedError, 499, "client_closed_request"),  # type: ignore[list-item]  # no HTTPStatus member
    (ServingError, HTTPStatus.INTERNAL_SERVER_ERROR, "server_error"),
)


def http_status(exc: ServingError) -> tuple[HTTPStatus, str]:
    """Look up the HTTP status and OpenAI error type for a serving error.

    Args:
        exc: the error.

    Returns:
        ``(status, error_type)`` from :data:`HTTP_STATUS`.
    """
    for cls, status, kind in HTTP_STATUS:
        if isinstance(exc, cls):
            return status, kind
    return HTTPStatus.INTERNAL_SERVER_ERROR, "server_error"


def error_body(exc: ServingError) -> dict:
    """The OpenAI-style JSON body for an error."""
    _, kind = http_status(exc)
    return {"error": {"message": exc.message, "type": kind, "param": exc.param, "code": exc.code}}


def error_headers(exc: ServingError) -> dict[str, str]:
    """Extra response headers for an error (``Retry-After`` for 429)."""
    if isinstance(exc, OverloadedError):
        return {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, AuthenticationError):
        return {"WWW-Authenticate": "Bearer"}
    return {}
