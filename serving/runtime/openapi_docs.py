"""OpenAPI documentation of request bodies and 4xx answers, so schema-based fuzzers can use it.

Our OpenAI routes read their bodies themselves (size limit first, then JSON with the
checks of :mod:`serving.runtime.validation`), so FastAPI cannot infer their request
schema: :func:`route_docs` adds it from the pydantic request model. :func:`document_errors`
adds the error answers every route can give (the guard's 400/413, the control routes'
401/403, 404, 429) to the schema FastAPI generates, KServe's V1/V2 routes included.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    """``error`` of an error body (OpenAI's shape)."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorDetail


_ERRORS = {
    400: "Invalid request: the message names the field and the limit (JSON, type, range, Unicode, context).",
    401: "Control route without the right bearer token.",
    403: "Control routes switched off (no $LLMOPS_REPOSITORY_TOKEN).",
    404: "Unknown model or model version.",
    413: "Body larger than --max_body_bytes.",
    429: "Queue full; retry after the Retry-After delay.",
}
_ROUTE_ERRORS = (400, 404, 413, 429)


class GenerationParameters(BaseModel):
    """V1/V2 request ``parameters`` (see ``serving.runtime.model.V2_PARAMETERS``)."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    ignore_eos: bool | None = None


class V1PredictRequest(BaseModel):
    """``POST /v1/models/{model_name}:predict`` body: prompts in ``instances``."""

    instances: list[str]
    parameters: GenerationParameters | None = None


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """Resolve ``#/$defs/...`` references in a pydantic JSON schema (our request models are not recursive)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(dict(defs[ref.split("/")[-1]]))
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def route_docs(request_model: type[BaseModel]) -> dict[str, Any]:
    """Keyword arguments for ``@router.post`` documenting the JSON body and the error answers."""
    schema = _inline(request_model.model_json_schema())
    return {
        "openapi_extra": {
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
        },
        "responses": {code: {"model": ErrorResponse, "description": _ERRORS[code]} for code in _ROUTE_ERRORS},
    }


def document_errors(app) -> None:
    """Make ``app.openapi()`` list the guard's error answers on every operation."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("ErrorResponse", _inline(ErrorResponse.model_json_schema()))
        ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
        v1_body = _inline(V1PredictRequest.model_json_schema())
        for path, item in schema.get("paths", {}).items():
            for method, op in item.items():
                responses = op.setdefault("responses", {})
                # Our handler answers FastAPI's validation errors with 400 (serving.runtime.server.install).
                if responses.pop("422", None) is not None:
                    responses.setdefault("400", {"description": _ERRORS[400], **ref})
                codes = [413] + ([400] if method == "post" else [])
                if "{model_name}" in path:
                    codes.append(404)
                if path.startswith("/v2/repository/"):
                    codes += [401, 403]
                elif method == "post":
                    codes.append(429)
                for code in codes:
                    responses.setdefault(str(code), {"description": _ERRORS[code], **ref})
                if path.startswith("/v1/models/") and method == "post" and "requestBody" not in op:
                    op["requestBody"] = {"required": True, "content": {"application/json": {"schema": v1_body}}}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
