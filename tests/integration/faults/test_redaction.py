"""No secret is printed: error paths run with credentials set, then every output and file is searched.

The tracking URI carries ``user:password@``, the KFP host a token, and the
environment holds MLflow, KFP and registry passwords; each command runs with
``-v`` (debug logging, tracebacks in the log) against dead services, and one
rollout retries its registry hook against a dead server until it gives up and
writes its report. Not one of the secrets may appear anywhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.mlflow_server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

URI_PASSWORD = "uri-pass-Q9w8e7"
KFP_TOKEN = "kfp-tok-Z1x2c3"
SECRETS = {
    "MLFLOW_TRACKING_PASSWORD": "env-pass-XYZ123",
    "KFP_TOKEN": "env-kfp-R4t5y6",
    "LLMOPS_REGISTRY_PASSWORD": "reg-pass-U7i8o9",
}
ALL = [URI_PASSWORD, KFP_TOKEN, *SECRETS.values()]


def test_no_secret_in_any_output_or_file(tmp_path, micro_model):
    dead = free_port()
    tracking = f"http://ops:{URI_PASSWORD}@127.0.0.1:{dead}"
    state = tmp_path / "state"
    runs = {
        "registry-champion": ["registry", "--tracking-uri", tracking, "champion", "llm"],
        "registry-history": ["registry", "--tracking-uri", tracking, "history", "llm"],
        "registry-lineage": ["registry", "--tracking-uri", tracking, "lineage", "llm", "1"],
        "import-models": ["import", "models:/llm/1", "--out", str(tmp_path / "imp"), "--tracking-uri", tracking],
        "promote": ["promote", "--model", "llm", "--version", "1", "--backend", "local", "--tracking-uri", tracking,
                    "--state-dir", str(state / "p")],
        "run": ["run", "--state-dir", str(state / "run")],
        "submit": ["submit", "--host", f"http://ci:{KFP_TOKEN}@127.0.0.1:{dead}", "--experiment", "x"],
        "build-image": ["build-image", str(micro_model), f"127.0.0.1:{dead}/llm:1", "--insecure", "--username", "ci"],
        "rollout-hooks": ["rollout", "--name", "llm", "--storage-uri", str(micro_model), "--model-version", "1",
                          "--registry-model", "llm", "--tracking-uri", tracking, "--no-quality", "--interval", "1",
                          "--state-dir", str(state / "serving"), "--report-dir", str(tmp_path / "report"),
                          "--timeout", "30"],
    }
    env = {**os.environ, **SECRETS, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", "NO_COLOR": "1",
           "MLFLOW_TRACKING_URI": tracking}

    def run(item):
        name, argv = item
        cwd = tmp_path / f"cwd-{name}"
        cwd.mkdir()
        return name, subprocess.run([sys.executable, "-m", "pipelines", "-v", *argv], cwd=cwd, env=env,
                                    capture_output=True, text=True, timeout=300)

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = dict(pool.map(run, runs.items()))
    finally:
        subprocess.run([sys.executable, "-m", "pipelines", "down", "--state-dir", str(state / "serving")], env=env,
                       capture_output=True, timeout=120)
    for name, proc in results.items():
        assert proc.returncode == 2, (name, proc.returncode, proc.stderr[-1500:])
        for secret in ALL:
            assert secret not in proc.stdout and secret not in proc.stderr, (name, secret)
    # the paths above did hit the secrets: the rollout retried its hook naming the (masked) server
    assert f"ops:***@127.0.0.1:{dead}" in results["rollout-hooks"].stderr
    assert "registry hook failed, retrying" in results["rollout-hooks"].stderr
    assert (tmp_path / "report" / "rollout.json").exists()
    leaks = []
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            leaks += [f"{path.relative_to(tmp_path)}: {s}" for s in ALL if s.encode() in data]
    assert leaks == []
