"""``llmops registry`` on the embedded store, and the MLflow UI command it prints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from model_registry import promote, register_model
from pipelines.cli import main
from tests.support.mlflow_server import free_port

pytestmark = pytest.mark.integration


def test_champion_lineage_and_history_commands(embedded_uri, model_name, micro_model, capsys):
    v1 = register_model(micro_model, model_name, metrics={"exact_match": 0.5}, pipeline_run_id="a", tracking_uri=embedded_uri)
    v2 = register_model(micro_model, model_name, metrics={"exact_match": 0.7}, pipeline_run_id="b", tracking_uri=embedded_uri)
    assert main(["registry", "--tracking-uri", embedded_uri, "champion", model_name]) == 0
    assert "no champion yet" in capsys.readouterr().out
    promote(model_name, v1.version, trigger="manual", tracking_uri=embedded_uri)
    promote(model_name, v2.version, trigger="ci", reason="better", tracking_uri=embedded_uri)

    assert main(["registry", "--tracking-uri", embedded_uri, "champion", model_name]) == 0
    out = capsys.readouterr().out
    assert f"champion is version 2 (models:/{model_name}/2)" in out and "exact_match: 0.7" in out

    assert main(["registry", "--tracking-uri", embedded_uri, "--json", "lineage", model_name, "champion"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["version"] == "2" and data["pipeline_run_id"] == "b" and data["aliases"] == ["champion"]

    assert main(["registry", "--tracking-uri", embedded_uri, "history", model_name]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert "promotion  v- -> v1  [manual]" in lines[0]
    assert "promotion  v1 -> v2  [ci]  better" in lines[1]


def test_unknown_model_is_a_cli_error(embedded_uri, capsys):
    assert main(["registry", "--tracking-uri", embedded_uri, "history", "no-such-model"]) == 2
    assert "no registered model named 'no-such-model'" in capsys.readouterr().err


@pytest.mark.slow
def test_ui_help_command_opens_the_ui_on_the_embedded_store(embedded_uri, model_name, micro_model, capsys, tmp_path):
    register_model(micro_model, model_name, tracking_uri=embedded_uri)
    port = free_port()
    assert main(["registry", "--tracking-uri", embedded_uri, "ui-help", "--port", str(port)]) == 0
    printed = capsys.readouterr().out
    command = next(line.strip() for line in printed.splitlines() if line.strip().startswith("mlflow ui"))
    argv = command.split()
    argv[0] = str(Path(sys.executable).with_name("mlflow"))
    log = (tmp_path / "ui.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, "MLFLOW_ENABLE_TELEMETRY": "false"})
    try:
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert status == 200, (tmp_path / "ui.log").read_text()[-2000:]
        models = httpx.get(
            f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/registered-models/search", params={"max_results": 100}, timeout=10
        ).json()
        assert model_name in [m["name"] for m in models.get("registered_models", [])]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
