"""Faults: a dead server, a server answering 5xx, a server killed in the middle of a registration."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from model_registry import RegistryUnavailable, get_champion, register_model, resolve
from tests.support.mlflow_server import MlflowServer, free_port

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)  # MLflow's own defaults retry for minutes; ours must give up in seconds
def test_dead_server_fails_fast_with_the_uri_and_the_fix(model_name, micro_model):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(RegistryUnavailable) as err:
        register_model(micro_model, model_name, tracking_uri=uri)
    message = str(err.value)
    assert f"MLflow tracking server at {uri} is unreachable or failing" in message
    assert "start the server" in message and "MLFLOW_TRACKING_URI" in message


class _Always500(BaseHTTPRequestHandler):
    hits = 0

    def _answer(self):
        type(self).hits += 1
        body = json.dumps({"error_code": "INTERNAL_ERROR", "message": "database is on fire"}).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.mark.timeout(120)
def test_server_answering_5xx_is_unavailable_after_bounded_retries(model_name):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Always500)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        _Always500.hits = 0
        with pytest.raises(RegistryUnavailable, match=f"MLflow tracking server at {uri} is unreachable or failing"):
            get_champion(model_name, tracking_uri=uri)
        assert _Always500.hits == 3  # one request + MLFLOW_HTTP_REQUEST_MAX_RETRIES=2
    finally:
        server.shutdown()
        server.server_close()


def test_server_killed_mid_registration_leaves_nothing_half_registered(tmp_path, model_name, tiny_model):
    server = MlflowServer(tmp_path / "mlflow")
    server.start()
    try:
        register_model(tiny_model, model_name, pipeline_run_id="warm-up", tracking_uri=server.uri)
        before = {p for p in server.artifacts_dir.rglob("*") if p.is_file()}
        killed = threading.Event()

        def kill_when_upload_starts():
            while not killed.is_set():
                if any(p.is_file() and p not in before for p in server.artifacts_dir.rglob("*")):
                    server.kill()
                    killed.set()
                    return
                killed.wait(0.005)

        watcher = threading.Thread(target=kill_when_upload_starts, daemon=True)
        watcher.start()
        changed = tmp_path / "changed"
        import shutil

        shutil.copytree(tiny_model, changed)
        (changed / "notes.txt").write_text("a different model folder\n")
        with pytest.raises(RegistryUnavailable, match=server.uri):
            register_model(changed, model_name, pipeline_run_id="run-1", tracking_uri=server.uri)
        killed.set()
        watcher.join(timeout=10)
        assert not server.alive()

        server.start()  # same port, same store
        from mlflow import MlflowClient

        client = MlflowClient(server.uri, registry_uri=server.uri)
        ready = [
            mv for mv in client.search_model_versions(f"name='{model_name}'") if mv.tags.get("llmops.status") == "ready"
        ]
        assert [str(mv.version) for mv in ready] == ["1"]  # only the warm-up version is visible
        assert resolve(model_name, "latest", tracking_uri=server.uri).version == "1"

        retry = register_model(changed, model_name, pipeline_run_id="run-1", tracking_uri=server.uri)
        assert retry.created is True
        assert resolve(model_name, "latest", tracking_uri=server.uri).version == retry.version
        versions = client.search_model_versions(f"name='{model_name}'")
        assert sorted(mv.tags.get("llmops.status") for mv in versions) == ["ready", "ready"]
    finally:
        server.stop()
