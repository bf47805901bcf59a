"""Wire the LLM model into KServe's ModelServer: argv, OpenAI routes, metrics, faults.

Everything KServe provides stays KServe's: ``ModelServer``, its FastAPI app
(``kserve.model_server.app``), V1/V2 protocol routes, health and readiness, exception
handling and ``/metrics``. We add the OpenAI router, one ASGI middleware that measures
inference requests (and applies the test-only faults), and a handler that renders
:mod:`serving.errors` as OpenAI error bodies.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import sys
import time
from collections.abc import Sequence

from serving.errors import InjectedFaultError, ServingError
from serving.runtime.config import ConfigError, EngineConfig, FaultConfig
from serving.runtime.limits import REPOSITORY_TOKEN_ENV, RequestLimits
from serving.cluster.names import MODEL_VERSION_ENV, PROBE_HEADER

INFERENCE_PATHS = re.compile(
    r"^/(openai/v1/(chat/)?completions|v2/models/[^/]+(/versions/[^/]+)?/infer|v1/models/[^/]+:predict)$"
)


def event_loop_factory(choice: str):
    """The loop ``--event-loop`` names, as uvicorn decides it: ``auto`` is uvloop when installed, else asyncio."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SystemExit("error: --event-loop uvloop: uvloop is not installed (pip install uvloop)") from None
        return None
    return uvloop.new_event_loop


def build_parser() -> argparse.ArgumentParser:
    """KServe's ModelServer parser extended with the LLM runtime's options."""
    from kserve import model_server

    parser = argparse.ArgumentParser(
        prog="python -m serving",
        parents=[model_server.parser],
        description="KServe model server for Hugging Face causal LMs with batching, OpenAI routes and metrics.",
    )
    parser.add_argument("--model_dir", default="/mnt/models", help="Hugging Face model folder (safetensors).")
    parser.add_argument(
        "--model_version",
        default=os.environ.get(MODEL_VERSION_ENV, "unversioned"),
        help="Version label on every metric (default: $LLMOPS_MODEL_VERSION).",
    )
    parser.add_argument("--http_host", default="0.0.0.0", help="Address to bind (127.0.0.1 for local tests).")
    parser.add_argument("--max_batch_size", type=int, default=16, help="Most sequences decoded together.")
    parser.add_argument("--max_batch_wait_ms", type=float, default=2.0, help="Idle wait for more arrivals.")
    parser.add_argument(
        "--kv_cache", default=EngineConfig.kv_cache,
        help="Where the running batch's KV cache lives: slots (default; preallocated batch slots, no copy per step) "
        "or concat (transformers' DynamicCache, concatenated every step). Models with sliding-window or "
        "linear-attention layers use concat either way.",
    )  # fmt: skip
    parser.add_argument("--max_queue", type=int, default=64, help="Most waiting requests; beyond it: 429.")
    parser.add_argument("--max_prompt_tokens", type=int, default=None, help="Default: max_total_tokens - 1.")
    parser.add_argument("--max_total_tokens", type=int, default=None, help="Default: the model's context.")
    parser.add_argument("--request_timeout_s", type=float, default=60.0, help="End-to-end limit per request.")
    parser.add_argument(
        "--warmup_requests", type=int, default=4,
        help="Requests generated before the server reports ready (one batch, then one alone), so the first "
        "users do not pay a fresh process's slow first passes; not counted in metrics; 0 skips it.",
    )
    parser.add_argument(
        "--torch_threads",
        type=_threads_flag,
        default=None,
        help="torch.set_num_threads for the generation worker; 0 keeps torch's default. Default "
        "($LLMOPS_TORCH_THREADS or) the container's CPUs: cgroup cpu.max / cfs quota, else the affinity "
        "mask. The local backend passes 1: its revisions share one machine.",
    )
    parser.add_argument(
        "--max_body_bytes", type=int, default=1 << 20, help="Largest request body on any route (413 beyond)."
    )
    parser.add_argument(
        "--max_prompt_chars",
        type=int,
        default=None,
        help="Longest prompt in characters, checked before tokenizing (default: 64 x max_prompt_tokens).",
    )
    parser.add_argument("--dtype", default=None, help="Load weights as this torch dtype (e.g. bfloat16).")
    parser.add_argument(
        "--trust_remote_code", action="store_true", help="Allow custom modelling code from the model folder."
    )
    faults = parser.add_argument_group("TEST-ONLY fault injection (canary tests; never in production)")
    faults.add_argument("--fault_latency_ms", type=float, default=0.0, help="Add this latency to every request.")
    faults.add_argument("--fault_error_rate", type=float, default=0.0, help="Answer 500 for this share of requests.")
    faults.add_argument("--fault_seed", type=int, default=None, help="Seed for the error draw.")
    faults.add_argument("--fault_latency_share", type=float, default=1.0, help="Share of requests that get --fault_latency_ms (tail latency).")
    parser.set_defaults(enable_grpc=False)  # one HTTP port per server: parallel servers do not clash
    return parser


_PROBE_HEADER = PROBE_HEADER.encode()  # ASGI header names are lower-case bytes


class InferenceMiddleware:
    """ASGI middleware for inference routes: llmops_* request metrics and TEST-ONLY faults.

    Args:
        app: the wrapped ASGI app.
        metrics: the model's ``RuntimeMetrics``.
        faults: fault settings (off by default).
        clock: monotonic clock.
    """

    def __init__(self, app, metrics, faults: FaultConfig, clock=time.monotonic):
        self.app = app
        self.metrics = metrics
        self.faults = faults
        self.clock = clock
        self._rng = random.Random(faults.seed)
        from serving.runtime.metrics import PROBE_REQUEST  # here, not at import: the module pulls in torch

        self._probe_request = PROBE_REQUEST

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not INFERENCE_PATHS.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        start = self.clock()
        status = {"code": 500, "done": False}
        probe = any(name == _PROBE_HEADER for name, _ in scope.get("headers", ()))
        token = self._probe_request.set(probe)  # the route reads it: a probe's first token is not in the TTFT series
        self.metrics.inflight.inc()

        async def recording_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                if not status["done"]:
                    status["done"] = True
                    self.metrics.request(status["code"], self.clock() - start, probe)
            await send(message)

        try:
            if self.faults.latency_ms > 0 and (self.faults.latency_share >= 1 or self._rng.random() < self.faults.latency_share):
                await asyncio.sleep(self.faults.latency_ms / 1000.0)
            if self.faults.error_rate > 0 and self._rng.random() < self.faults.error_rate:
                await _send_error(recording_send, InjectedFaultError("injected fault (--fault_error_rate)", code="injected_fault"))
                return
            await self.app(scope, receive, recording_send)
        finally:
            self._probe_request.reset(token)
            self.metrics.inflight.dec()
            if not status["done"]:  # exception or client gone before the last byte
                status["done"] = True
                self.metrics.request(status["code"], self.clock() - start, probe)


async def _send_error(send, exc: ServingError) -> None:
    from serving.runtime.limits import send_error

    await send_error(send, exc)


def install(app, model, faults: FaultConfig | None = None) -> None:
    """Add the OpenAI routes, the request guard, the inference middleware and the ServingError handler.

    Args:
        app: ``kserve.model_server.app`` (or any FastAPI app KServe serves).
        model: the loaded ``LLMModel`` (its ``limits`` configure the guard).
        faults: TEST-ONLY faults.
    """
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    from serving.errors import InvalidRequestError
    from serving.runtime.limits import RequestGuard
    from serving.runtime.openai_api import build_router, error_response
    from serving.runtime.openapi_docs import ErrorResponse, document_errors

    async def ready():
        # Registered before KServe's /v2/health/ready (first match wins), whose DataPlane.ready() is always
        # True: here readiness follows the model, so an unloaded model or a dead worker reads not ready.
        if await model.healthy():
            return JSONResponse({"ready": True})
        return JSONResponse(
            {"error": {"message": f"model {model.name} cannot serve", "type": "service_unavailable",
                       "param": None, "code": "not_ready"}},
            status_code=503,
        )

    app.add_api_route(
        "/v2/health/ready", ready, methods=["GET"], tags=["V2"], response_model=None,
        responses={503: {"model": ErrorResponse, "description": "The model cannot serve."}},
    )  # fmt: skip
    app.include_router(build_router(model))
    # Added first, so innermost: the inference middleware still counts the guard's refusals.
    app.add_middleware(RequestGuard, limits=model.limits, model_version=model.model_version)
    app.add_middleware(InferenceMiddleware, metrics=model.metrics, faults=faults or FaultConfig())
    document_errors(app)

    async def serving_error_handler(_request, exc: ServingError) -> JSONResponse:
        return error_response(exc)

    async def validation_handler(_request, exc: RequestValidationError) -> JSONResponse:
        # KServe's V2 routes validate bodies with pydantic: answer in the same error shape.
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(InvalidRequestError(f"invalid request at {loc!r}: {first.get('msg')}", param=loc))

    app.add_exception_handler(ServingError, serving_error_handler)
    app.add_exception_handler(RequestValidationError, validation_handler)


def _threads_flag(text: str) -> int:
    from serving.runtime.threads import whole_threads

    try:
        return whole_threads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> None:
    """Parse argv, load the model and run KServe's ModelServer until SIGTERM."""
    from serving.runtime.threads import choose_threads, requested_threads

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        wanted_threads, threads_source = requested_threads(args.torch_threads, os.environ)
    except ValueError as exc:
        parser.error(str(exc))
    if args.workers != 1:
        raise SystemExit("--workers must be 1: a single generation worker owns the model (scale with replicas)")
    try:
        engine_config = EngineConfig(
            max_batch_size=args.max_batch_size,
            max_batch_wait_ms=args.max_batch_wait_ms,
            kv_cache=args.kv_cache,
            max_queue=args.max_queue,
            max_prompt_tokens=args.max_prompt_tokens,
            max_total_tokens=args.max_total_tokens,
            request_timeout_s=args.request_timeout_s,
            warmup_requests=args.warmup_requests,
        ).validate()
        faults = FaultConfig(args.fault_latency_ms, args.fault_error_rate, args.fault_seed, args.fault_latency_share).validate()
        limits = RequestLimits(
            max_body_bytes=args.max_body_bytes,
            max_prompt_chars=args.max_prompt_chars,
            repository_token=os.environ.get(REPOSITORY_TOKEN_ENV) or None,
        ).validate()
    except ConfigError as exc:  # a bad flag: a usage error, exit 2 as argparse's own
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    import torch
    from kserve import ModelServer, model_server
    from kserve.logging import logger
    from kserve.protocol.rest.server import RESTServer

    from serving.runtime.model import LLMModel, ModelLoadError

    if args.configure_logging:  # as ModelServer would, but early enough for the load messages
        from kserve import logging as kserve_logging

        if not logger.handlers:
            kserve_logging.configure_logging(args.log_config_file)
    threads = choose_threads(wanted_threads, threads_source)
    torch.set_num_threads(threads.threads)
    logger.info("torch threads: %s", threads.describe())
    model = LLMModel(
        args.model_name,
        args.model_dir,
        model_version=args.model_version,
        engine_config=engine_config,
        torch_dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        limits=limits,
    )
    try:
        model.load()
    except (ModelLoadError, ConfigError) as exc:
        raise SystemExit(f"error: {exc}") from None
    if faults.enabled:
        logger.warning("TEST-ONLY fault injection is ON: %s", faults)
    logger.info(
        "request limits: body %d bytes, prompt %d characters, model repository routes %s",
        limits.max_body_bytes,
        limits.prompt_chars(model.engine_config.max_prompt_tokens),
        "on (bearer token)" if limits.repository_token else "off",
    )
    install(model_server.app, model, faults)

    class _Server(ModelServer):
        """KServe's ModelServer, binding ``--http_host`` instead of always 0.0.0.0."""

        def start(self, models):  # single-worker path of ModelServer.start
            self._register_and_check_atleast_one_model_is_ready(models)
            self._rest_server = RESTServer(
                "kserve.model_server:app",
                self.dataplane,
                self.model_repository_extension,
                self.http_port,
                access_log_format=self.access_log_format,
                workers=1,
                grace_period=self.grace_period,
                event_loop=self.event_loop,
                timeout_keep_alive=self.timeout_keep_alive,
            )
            self._rest_server.config.host = args.http_host
            self.servers.append(self._rest_server.start())
            if self.enable_grpc:
                from kserve.protocol.grpc.server import GRPCServer

                self._grpc_server = GRPCServer(
                    self.grpc_port,
                    self.dataplane,
                    self.model_repository_extension,
                    kwargs=vars(args),
                    grace_period=self.grace_period,
                )
                self.servers.append(self._grpc_server.start(self.max_threads))
            self.register_signal_handler()
            # KServe's single-worker path runs ``asyncio.run`` and so never uses uvloop, whatever
            # --event-loop says; uvicorn's own rule (uvicorn/loops/auto.py, ``auto_loop_factory``)
            # picks uvloop when it is installed. KServe's ``setup_event_loop`` configures
            # ``asyncio.get_event_loop()``, not the loop that serves, so the same is done in ``_serve``.
            with asyncio.Runner(loop_factory=event_loop_factory(self.event_loop)) as runner:
                runner.run(self._serve())

        async def _serve(self):
            self.setup_event_loop()
            logger.info("event loop: %s", type(asyncio.get_running_loop()).__module__.partition(".")[0])
            await super()._serve()

    _Server(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=1,
        enable_grpc=args.enable_grpc,
        enable_docs_url=args.enable_docs_url,
        enable_latency_logging=args.enable_latency_logging,
        access_log_format=args.access_log_format,
        event_loop=args.event_loop,
        timeout_keep_alive=args.timeout_keep_alive,
        grace_period=int(max(args.request_timeout_s, 1)) + 5,
    ).start([model])
    logger.info("model server stopped")
