"""The local backend's router: one reverse proxy per InferenceService.

It stands in for Knative's ingress: requests are split across revisions by the
weights in a routes file that :class:`serving.backends.local.LocalBackend`
rewrites atomically (the router notices the change on the next request), and
tag routing maps KServe's tagged hostnames onto path prefixes:

=========================================  ====================================
KServe (Serverless, tag routing on)        local router
=========================================  ====================================
``http://<isvc>.<ns>.example.com/...``     ``http://127.0.0.1:<port>/...``
``http://latest-<isvc>...``                ``http://127.0.0.1:<port>/_tag/latest/...``
``http://prev-<isvc>...``                  ``http://127.0.0.1:<port>/_tag/prev/...``
=========================================  ====================================

Responses stream through unbuffered (SSE included), and so do request bodies (only the
first :data:`RETRY_BUFFER_BYTES` are kept, to replay them on a retry). Every proxied
response carries ``x-llmops-revision`` and ``x-llmops-model-version`` naming the revision
that answered. ``GET /_router/health`` returns the table in use and each revision's health.

Faults, as Envoy's outlier detection and retry policy handle them:

* **Passive health**: :data:`CONSECUTIVE_FAILURES` gateway failures in a row (connection
  refused or reset, a stream cut, 502/503 from the revision) eject a revision for
  ``base_ejection_s x times ejected`` (capped); its traffic share goes to the other
  ready revisions in proportion to their weights. When every revision is ejected the
  router sends to all of them (Envoy's panic mode) rather than refusing everything.
* **One retry** on another revision when the failure happened before any byte reached the
  client and the body is small enough to replay: a refused connection or a 503 for any
  method, a reset for idempotent methods and the inference routes (generation has no side
  effects, so a completion cut before its answer is simply generated again).
* **A stream cut mid-way** ends with an SSE ``data: {"error": ...}`` event (no ``[DONE]``)
  for ``text/event-stream`` answers; other bodies end with a broken connection, never a
  clean end the client would read as complete.
* **Supervision** (``--state-dir``): a thread reconciles the service through
  :class:`serving.backends.local.LocalBackend` every ``--supervise-interval-s`` seconds, which
  restarts a crashed revision with backoff and puts it back in the routes once it is ready.

An unreachable revision with no retry left gives ``502`` and an unknown tag ``404``, both
with an OpenAI-style JSON error body.

Run: ``python -m serving.backends.router --routes FILE --port PORT [--host 127.0.0.1]
[--state-dir DIR --service NAMESPACE/NAME]``.

Routes file::

    {"name": "demo", "namespace": "default",
     "targets": [{"revision": "demo-predictor-00002", "percent": 25, "tag": "latest",
                  "url": "http://127.0.0.1:41234", "model_version": "2"}, ...]}
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

log = logging.getLogger("serving.backends.router")

TAG_PREFIX = "/_tag/"
HEALTH_PATH = "/_router/health"
REVISION_HEADER = "x-llmops-revision"
MODEL_VERSION_HEADER = "x-llmops-model-version"
# Hop-by-hop headers (RFC 9110 §7.6.1) are never forwarded.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade"}
)
REQUEST_SKIP = HOP_BY_HOP | {"host", "content-length"}  # httpx sets both for the upstream request
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})  # RFC 9110 §9.2.2
RETRY_BUFFER_BYTES = 256 * 1024  # bodies up to this size are kept for a retry; larger ones just stream
CONSECUTIVE_FAILURES = 3  # gateway failures in a row that eject a revision (Envoy's consecutive_gateway_failure)
GATEWAY_FAILURE_CODES = frozenset({502, 503})  # upstream answers counted as failures (not 500/504: app errors)


@dataclass(frozen=True)
class Target:
    """One revision the router can send requests to."""

    revision: str  # revision name
    percent: int  # traffic share
    url: str | None  # base URL of its model server (None: not started or not ready)
    tag: str | None = None  # "latest" / "prev" with tag routing
    model_version: str | None = None  # for logs only


@dataclass
class _Health:
    consecutive: int = 0  # gateway failures in a row
    ejections: int = 0  # times ejected so far
    ejected_until: float = 0.0  # monotonic time the current ejection ends


@dataclass
class OutlierDetector:
    """Consecutive-failure ejection per (revision, url), as Envoy's outlier detection.

    A revision is ejected after ``consecutive_failures`` gateway failures in a row, for
    ``base_ejection_s x ejections`` (capped at ``max_ejection_s``); a success resets the count.
    A restarted revision gets a new URL and so a clean record.
    """

    consecutive_failures: int = CONSECUTIVE_FAILURES
    base_ejection_s: float = 5.0
    max_ejection_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _health: dict[tuple[str, str], _Health] = field(default_factory=dict)

    def _of(self, target: Target) -> _Health:
        return self._health.setdefault((target.revision, target.url or ""), _Health())

    def ejected(self, target: Target) -> bool:
        """Whether the target is ejected right now."""
        return self._of(target).ejected_until > self.clock()

    def success(self, target: Target) -> None:
        """Record an answer that proves the revision works."""
        self._of(target).consecutive = 0

    def failure(self, target: Target) -> None:
        """Record a gateway failure; eject the revision on the threshold."""
        h = self._of(target)
        h.consecutive += 1
        if h.consecutive >= self.consecutive_failures and h.ejected_until <= self.clock():
            h.ejections += 1
            h.consecutive = 0
            span = min(self.base_ejection_s * h.ejections, self.max_ejection_s)
            h.ejected_until = self.clock() + span
            log.warning(
                "ejected revision %s (%s) for %.0fs after %d consecutive failures (ejection %d)",
                target.revision, target.url, span, self.consecutive_failures, h.ejections,
            )  # fmt: skip

    def forget(self, keep: Sequence[Target]) -> None:
        """Drop records of targets no longer in the table."""
        live = {(t.revision, t.url or "") for t in keep}
        for key in list(self._health):
            if key not in live:
                del self._health[key]

    def report(self) -> dict[str, Any]:
        """Health per revision, for ``/_router/health``."""
        now = self.clock()
        return {
            rev: {
                "url": url or None,
                "consecutive_failures": h.consecutive,
                "ejections": h.ejections,
                "ejected_for_s": round(max(h.ejected_until - now, 0.0), 3),
            }
            for (rev, url), h in self._health.items()
        }


class WeightedPicker:
    """Smooth weighted round-robin (nginx's): shares are exact over every 100 picks.

    Deterministic, so a 25% canary gets exactly 25 of each 100 requests. Targets the
    caller excludes (ejected, not running) sit out; their share goes to the others in
    proportion to their weights.
    """

    def __init__(self, targets: Sequence[Target]) -> None:
        self.targets = [t for t in targets if t.percent > 0]
        self._current = [0] * len(self.targets)

    def pick(self, eligible: Callable[[Target], bool] = lambda t: True) -> Target | None:
        """The next target among those ``eligible`` accepts (None if there is none)."""
        total = 0
        best = -1
        for i, t in enumerate(self.targets):
            if not eligible(t):
                continue
            self._current[i] += t.percent
            total += t.percent
            if best < 0 or self._current[i] > self._current[best]:
                best = i
        if best < 0:
            return None
        self._current[best] -= total
        return self.targets[best]


class RouteTable:
    """The routes file, reloaded whenever it is replaced."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self.targets: tuple[Target, ...] = ()
        self.picker = WeightedPicker(())
        self.raw: dict[str, Any] = {}
        self.refresh()

    def refresh(self) -> bool:
        """Reload the file if its inode, size or mtime changed (a stat per call); True if it did."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return False
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # mid-replace or broken: keep the last good table
            log.warning("cannot read routes %s: %s; keeping the previous table", self.path, exc)
            return False
        self._stamp = stamp
        self.raw = raw
        self.targets = tuple(
            Target(
                revision=t["revision"],
                percent=int(t.get("percent") or 0),
                url=t.get("url"),
                tag=t.get("tag"),
                model_version=t.get("model_version"),
            )
            for t in raw.get("targets") or ()
        )
        self.picker = WeightedPicker(self.targets)
        log.info(
            "routes: %s",
            ", ".join(
                f"{t.revision}={t.percent}%" + (f" [{t.tag}]" if t.tag else "") + ("" if t.url else " (down)")
                for t in self.targets
            )
            or "none",
        )
        return True

    def for_tag(self, tag: str) -> Target | None:
        return next((t for t in self.targets if t.tag == tag), None)


def split_tag(path: str) -> tuple[str | None, str]:
    """``/_tag/latest/openai/v1/x`` -> ``("latest", "/openai/v1/x")``; other paths have no tag."""
    if not path.startswith(TAG_PREFIX):
        return None, path
    rest = path[len(TAG_PREFIX) :]
    tag, _, tail = rest.partition("/")
    return tag, "/" + tail


def _error(status: int, message: str, type_: str, code: str):
    from starlette.responses import JSONResponse

    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


def _idempotent(method: str, path: str) -> bool:
    """Safe to send twice: idempotent methods, and POSTs to the model server's inference routes."""
    from serving.runtime.server import INFERENCE_PATHS

    return method in IDEMPOTENT or (method == "POST" and INFERENCE_PATHS.match(path) is not None)


def _sse_error(message: str) -> bytes:
    body = {"error": {"message": message, "type": "bad_gateway", "param": None, "code": "upstream_stream_broken"}}
    return f"data: {json.dumps(body)}\n\n".encode()


class _Body:
    """The client's request body: the first :data:`RETRY_BUFFER_BYTES` kept, the rest streamed through."""

    def __init__(self, head: list[bytes], rest):
        self.head = head
        self.rest = rest  # None when ``head`` is the whole body
        self.sent = False  # a streaming body can be sent once

    @classmethod
    async def read(cls, request) -> "_Body":
        stream = request.stream()
        head, size = [], 0
        async for chunk in stream:
            head.append(chunk)
            size += len(chunk)
            if size > RETRY_BUFFER_BYTES:
                return cls(head, stream)
        return cls(head, None)

    @property
    def replayable(self) -> bool:
        return self.rest is None or not self.sent

    def content(self):
        if self.rest is None:
            return b"".join(self.head) or None
        self.sent = True
        head, rest = self.head, self.rest

        async def stream():
            for chunk in head:
                yield chunk
            async for chunk in rest:
                yield chunk

        return stream()


def build_app(
    routes_path: Path,
    *,
    connect_timeout_s: float = 5.0,
    read_timeout_s: float = 600.0,
    detector: OutlierDetector | None = None,
):
    """The router as an ASGI app (Starlette) proxying with one shared ``httpx.AsyncClient``."""
    import contextlib

    import httpx
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    table = RouteTable(routes_path)
    health_of = detector or OutlierDetector()
    state: dict[str, httpx.AsyncClient] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        timeout = httpx.Timeout(connect=connect_timeout_s, read=read_timeout_s, write=60.0, pool=30.0)
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:
            state["client"] = client
            yield

    def refresh() -> None:
        if table.refresh():
            health_of.forget(table.targets)

    async def health(request: Request):
        refresh()
        return JSONResponse({"status": "ok", "routes": table.raw, "health": health_of.report()})

    def pick(exclude: frozenset[str]) -> Target | None:
        def usable(t: Target) -> bool:
            return bool(t.url) and t.revision not in exclude and not health_of.ejected(t)

        target = table.picker.pick(usable)
        if target is None:  # every revision ejected: panic mode, try the running ones anyway
            target = table.picker.pick(lambda t: bool(t.url) and t.revision not in exclude)
        return target

    async def proxy(request: Request):
        refresh()
        tag, path = split_tag(request.url.path)
        if tag is not None:
            target = table.for_tag(tag)
            if target is None:
                known = sorted({t.tag for t in table.targets if t.tag})
                return _error(
                    404,
                    f"no revision is tagged {tag!r} right now (tags: {', '.join(known) or 'none'}; "
                    "tags need the serving.kserve.io/enable-tag-routing annotation, and 'prev' "
                    "exists only during a canary)",
                    "not_found_error",
                    "unknown_tag",
                )
        else:
            target = pick(frozenset())
            if target is None:
                down = [t.revision for t in table.picker.targets]
                if not down:
                    return _error(
                        503, "no revision is ready to take traffic yet", "service_unavailable", "no_ready_revision"
                    )
                return _error(
                    502,
                    f"revision {', '.join(down)} is unreachable: its model server is not running "
                    "(the local backend restarts crashed revisions with backoff)",
                    "bad_gateway",
                    "upstream_unavailable",
                )
        if not target.url:
            return _error(
                502,
                f"revision {target.revision} is unreachable: its model server is not running",
                "bad_gateway",
                "upstream_unavailable",
            )
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in REQUEST_SKIP]
        client = request.client
        if client:
            headers.append(("x-forwarded-for", client.host))
        body = await _Body.read(request)
        http = state["client"]
        tried: set[str] = set()
        while True:
            tried.add(target.revision)
            url = target.url + path + (("?" + request.url.query) if request.url.query else "")
            upstream_req = http.build_request(request.method, url, headers=headers, content=body.content())
            failure: str | None = None
            retry_ok = False
            try:
                upstream = await http.send(upstream_req, stream=True)
            except httpx.TransportError as exc:
                health_of.failure(target)
                failure = f"revision {target.revision} at {target.url} is unreachable: {type(exc).__name__}: {exc}"
                # A refused connection never read the body: safe to resend; otherwise only idempotent requests
                # (inference has no side effects: a completion cut before its answer can be generated again).
                refused = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
                retry_ok = body.replayable and (refused or _idempotent(request.method, path))
                log.warning("%s", failure)
            else:
                if upstream.status_code in GATEWAY_FAILURE_CODES:
                    health_of.failure(target)
                    if tag is None and body.replayable and len(tried) < 2:
                        alternative = pick(frozenset(tried))
                        if alternative is not None:
                            await upstream.aclose()
                            log.warning("revision %s answered %d; retrying on %s",
                                        target.revision, upstream.status_code, alternative.revision)  # fmt: skip
                            target = alternative
                            continue
                else:
                    health_of.success(target)
                break
            alternative = pick(frozenset(tried)) if tag is None and retry_ok and len(tried) < 2 else None
            if alternative is None:
                return _error(502, failure, "bad_gateway", "upstream_unavailable")
            log.warning("retrying on revision %s", alternative.revision)
            target = alternative

        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        out_headers[REVISION_HEADER] = target.revision
        if target.model_version:
            out_headers[MODEL_VERSION_HEADER] = target.model_version
        is_sse = upstream.headers.get("content-type", "").startswith("text/event-stream")
        answered = target

        async def body_iter():
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            except httpx.HTTPError as exc:  # upstream died mid-stream
                health_of.failure(answered)
                message = f"revision {answered.revision} broke the stream: {type(exc).__name__}: {exc}"
                log.warning("%s", message)
                if not is_sse:
                    raise  # the connection is cut: the client sees an incomplete body, not a clean end
                yield _sse_error(message)

        return StreamingResponse(
            body_iter(), status_code=upstream.status_code, headers=out_headers, background=BackgroundTask(upstream.aclose)
        )

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(
        routes=[
            Route(HEALTH_PATH, health, methods=["GET"]),
            Route("/{path:path}", proxy, methods=methods),
        ],
        lifespan=lifespan,
    )


def supervise(
    state_dir: Path, name: str, namespace: str, interval_s: float, stop: threading.Event
) -> None:
    """Reconcile one service every ``interval_s`` until ``stop`` (restarts crashed revisions with backoff).

    Runs in the router process, the one long-lived process per service: the local backend has
    no controller loop of its own (every backend call reconciles what it touches).
    """
    from serving.backends.base import BackendError, NotFound
    from serving.backends.local import LocalBackend

    backend = None
    while not stop.wait(interval_s):
        try:
            backend = backend or LocalBackend.for_supervision(state_dir, name, namespace)
            backend.get(name, namespace)
        except NotFound:
            log.info("%s/%s was deleted; supervision ends", namespace, name)
            return
        except (BackendError, OSError) as exc:
            log.warning("supervising %s/%s failed: %s; retrying in %.0fs", namespace, name, exc, interval_s)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.backends.router",
        description="Weighted, tag-aware reverse proxy in front of one InferenceService's revisions "
        "(started by the local serving backend).",
    )
    parser.add_argument("--routes", type=Path, required=True, help="routes JSON file written by the local backend")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--state-dir", type=Path, default=None, help="local backend state folder: supervise the service")
    parser.add_argument("--service", default=None, help="NAMESPACE/NAME of the supervised InferenceService")
    parser.add_argument("--supervise-interval-s", type=float, default=1.0, help="seconds between reconciles")
    parser.add_argument("--ejection-s", type=float, default=5.0, help="base ejection time of a failing revision")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    app = build_app(args.routes, detector=OutlierDetector(base_ejection_s=args.ejection_s))
    stop = threading.Event()
    if args.state_dir is not None:
        if not args.service or "/" not in args.service:
            parser.error("--state-dir needs --service NAMESPACE/NAME")
        namespace, name = args.service.split("/", 1)
        threading.Thread(
            target=supervise,
            args=(args.state_dir, name, namespace, args.supervise_interval_s, stop),
            name="llmops-supervisor",
            daemon=True,
        ).start()
    log.info("router for %s listening on http://%s:%d", args.routes, args.host, args.port)
    try:
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_level="warning",
            access_log=args.access_log,
            timeout_graceful_shutdown=5,
            server_header=False,  # the upstream's date/server headers pass through instead
            date_header=False,
        )
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
