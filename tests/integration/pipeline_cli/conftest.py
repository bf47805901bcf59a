"""A small fake of the Kubeflow Pipelines v2beta1 REST API, served over real HTTP on loopback.

No KFP server can run here, so ``llmops submit`` is tested with the official
``kfp.Client`` against this server. It implements only the endpoints the
client calls for upload and run (read from ``kfp/client/client.py`` and
``kfp_server_api``): healthz, list/upload pipelines, list/upload pipeline
versions, list/create experiments, create runs, with the JSON shapes of the
v2beta1 API, and records every request in :attr:`KfpFake.requests`.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

API = "/apis/v2beta1"


def _matches(item: dict, flt: str | None) -> bool:
    if not flt:
        return True
    for pred in json.loads(flt).get("predicates", []):
        if pred.get("operation") in ("EQUALS", 1) and str(item.get(pred["key"])) != str(pred.get("stringValue", pred.get("string_value"))):
            return False
    return True


class KfpFake:
    """Start with ``with KfpFake() as kfp: kfp.url``; inspect ``pipelines``, ``versions``, ``experiments``, ``runs``."""

    def __init__(self) -> None:
        self.pipelines: list[dict[str, Any]] = []
        self.versions: list[dict[str, Any]] = []  # each with "package" (the uploaded bytes)
        self.experiments: list[dict[str, Any]] = []
        self.runs: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.auth: list[str | None] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ------------------------------------------------------------ handlers
    def _pipeline_upload(self, query, body, ctype):
        package = _multipart_file(body, ctype, "uploadfile")
        name = (query.get("display_name") or query.get("name") or [""])[0]
        if any(p["display_name"] == name for p in self.pipelines):
            return 409, {"error": f"pipeline {name} already exists", "code": 6}
        pipe = {"pipeline_id": uuid.uuid4().hex, "display_name": name, "name": name,
                "description": (query.get("description") or [""])[0], "created_at": "2026-01-01T00:00:00Z"}
        self.pipelines.append(pipe)
        self._add_version(pipe["pipeline_id"], name, package)
        return 200, pipe

    def _add_version(self, pipeline_id: str, name: str, package: bytes) -> dict:
        version = {"pipeline_id": pipeline_id, "pipeline_version_id": uuid.uuid4().hex, "display_name": name,
                   "name": name, "created_at": "2026-01-01T00:00:00Z"}
        self.versions.append(dict(version, package=package))
        return version

    def _version_upload(self, query, body, ctype):
        pipeline_id = query["pipelineid"][0]
        name = (query.get("display_name") or query.get("name"))[0]
        if not any(p["pipeline_id"] == pipeline_id for p in self.pipelines):
            return 404, {"error": f"pipeline {pipeline_id} not found", "code": 5}
        if any(v["pipeline_id"] == pipeline_id and v["display_name"] == name for v in self.versions):
            return 409, {"error": f"version {name} already exists", "code": 6}
        return 200, self._add_version(pipeline_id, name, _multipart_file(body, ctype, "uploadfile"))

    def handle(self, method: str, path: str, query: dict, body: bytes, ctype: str, auth: str | None) -> tuple[int, Any]:
        self.requests.append((method, path))
        self.auth.append(auth)
        flt = (query.get("filter") or [None])[0]
        if method == "GET" and path == f"{API}/healthz":
            return 200, {"multi_user": False}
        if method == "GET" and path == f"{API}/pipelines":
            found = [p for p in self.pipelines if _matches(p, flt)]
            return 200, ({"pipelines": found, "total_size": len(found)} if found else {})
        if method == "POST" and path == f"{API}/pipelines/upload":
            return self._pipeline_upload(query, body, ctype)
        if method == "POST" and path == f"{API}/pipelines/upload_version":
            return self._version_upload(query, body, ctype)
        if method == "GET" and path.startswith(f"{API}/pipelines/") and path.endswith("/versions"):
            pid = path.split("/")[-2]
            found = [{k: v for k, v in ver.items() if k != "package"} for ver in self.versions
                     if ver["pipeline_id"] == pid and _matches(ver, flt)]
            return 200, ({"pipeline_versions": found, "total_size": len(found)} if found else {})
        if method == "GET" and path == f"{API}/experiments":
            found = [e for e in self.experiments if _matches(e, flt)]
            return 200, ({"experiments": found, "total_size": len(found)} if found else {})
        if method == "POST" and path == f"{API}/experiments":
            exp = dict(json.loads(body), experiment_id=uuid.uuid4().hex)
            self.experiments.append(exp)
            return 200, exp
        if method == "POST" and path == f"{API}/runs":
            run = dict(json.loads(body), run_id=uuid.uuid4().hex, state="PENDING")
            self.runs.append(run)
            return 200, run
        return 404, {"error": f"{method} {path} is not implemented by the fake", "code": 5}

    # ------------------------------------------------------------ server
    def __enter__(self) -> "KfpFake":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _do(self, method: str) -> None:
                url = urlparse(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                code, payload = fake.handle(method, url.path, parse_qs(url.query), body,
                                            self.headers.get("Content-Type", ""), self.headers.get("Authorization"))
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                self._do("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._do("POST")

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _multipart_file(body: bytes, ctype: str, field: str) -> bytes:
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {ctype}\r\n\r\n".encode() + body
    )
    for part in msg.iter_parts():
        if part.get_param("name", header="content-disposition") == field:
            return part.get_payload(decode=True)
    raise ValueError(f"no multipart field {field!r}")


import pytest  # noqa: E402


@pytest.fixture
def kfp_server():
    """A fresh fake KFP API on a free loopback port."""
    with KfpFake() as fake:
        yield fake


@pytest.fixture(scope="session")
def compiled_package(tmp_path_factory):
    """The release pipeline compiled once for the session."""
    from pipelines.commands.compile import compile_pipeline

    return compile_pipeline(tmp_path_factory.mktemp("kfp") / "llm_release.yaml")
