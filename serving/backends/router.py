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

Responses stream through unbuffered (SSE included). Every proxied response
carries ``x-llmops-revision`` and ``x-llmops-model-version`` naming the
revision that answered. An
unreachable revision gives ``502`` and an unknown tag ``404``, both with an
OpenAI-style JSON error body. ``GET /_router/health`` returns the table in use.

Run: ``python -m serving.backends.router --routes FILE --port PORT [--host 127.0.0.1]``.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

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


@dataclass(frozen=True)
class Target:
    """One revision the router can send requests to."""

    revision: str  # revision name
    percent: int  # traffic share
    url: str | None  # base URL of its model server (None: not started)
    tag: str | None = None  # "latest" / "prev" with tag routing
    model_version: str | None = None  # for logs only


class WeightedPicker:
    """Smooth weighted round-robin (nginx's): shares are exact over every 100 picks.

    Deterministic, so a 25% canary gets exactly 25 of each 100 requests.
    """

    def __init__(self, targets: Sequence[Target]) -> None:
        self.targets = [t for t in targets if t.percent > 0]
        self._current = [0] * len(self.targets)

    def pick(self) -> Target | None:
        if not self.targets:
            return None
        total = 0
        best = 0
        for i, t in enumerate(self.targets):
            self._current[i] += t.percent
            total += t.percent
            if self._current[i] > self._current[best]:
                best = i
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

    def refresh(self) -> None:
        """Reload the file if its inode, size or mtime changed (a stat per call)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # mid-replace or broken: keep the last good table
            log.warning("cannot read routes %s: %s; keeping the previous table", self.path, exc)
            return
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
            ", ".join(f"{t.revision}={t.percent}%" + (f" [{t.tag}]" if t.tag else "") for t in self.targets) or "none",
        )

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


def build_app(routes_path: Path, *, connect_timeout_s: float = 5.0, read_timeout_s: float = 600.0):
    """The router as an ASGI app (Starlette) proxying with one shared ``httpx.AsyncClient``."""
    import contextlib

    import httpx
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    table = RouteTable(routes_path)
    state: dict[str, httpx.AsyncClient] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        timeout = httpx.Timeout(connect=connect_timeout_s, read=read_timeout_s, write=60.0, pool=30.0)
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:
            state["client"] = client
            yield

    async def health(request: Request):
        table.refresh()
        return JSONResponse({"status": "ok", "routes": table.raw})

    async def proxy(request: Request):
        table.refresh()
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
            target = table.picker.pick()
            if target is None:
                return _error(
                    503, "no revision is ready to take traffic yet", "service_unavailable", "no_ready_revision"
                )
        if not target.url:
            return _error(
                502, f"revision {target.revision} has no running model server", "bad_gateway", "upstream_unavailable"
            )
        url = target.url + path
        if request.url.query:
            url += "?" + request.url.query
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in REQUEST_SKIP]
        client = request.client
        if client:
            headers.append(("x-forwarded-for", client.host))
        body = await request.body()
        http = state["client"]
        upstream_req = http.build_request(request.method, url, headers=headers, content=body or None)
        try:
            upstream = await http.send(upstream_req, stream=True)
        except httpx.TransportError as exc:
            log.warning("revision %s at %s unreachable: %r", target.revision, target.url, exc)
            return _error(
                502,
                f"revision {target.revision} at {target.url} is unreachable: {type(exc).__name__}: {exc}",
                "bad_gateway",
                "upstream_unavailable",
            )
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        out_headers[REVISION_HEADER] = target.revision
        if target.model_version:
            out_headers[MODEL_VERSION_HEADER] = target.model_version

        async def body_iter():
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            except httpx.HTTPError as exc:  # upstream died mid-stream: end the response
                log.warning("stream from %s broke: %r", target.revision, exc)

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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    app = build_app(args.routes)
    log.info("router for %s listening on http://%s:%d", args.routes, args.host, args.port)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
