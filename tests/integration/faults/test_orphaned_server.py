"""A controller SIGKILLed between starting a model server and saving state.json leaves no orphan.

The apply runs in a real subprocess that kills itself at the named point
``local.spawned`` (``LLMOPS_KILL_AT``); the model server it started survives
it (its own session, as a real one would). The rerun must stop that process
instead of starting a second one, and ``llmops down`` must leave nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from llmops_core.faults import KILL_ENV
from serving.backends.local import LocalBackend

pytestmark = pytest.mark.integration


def _isvc(model_dir) -> dict:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "llm", "namespace": "default"},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "llmops-llm"}, "storageUri": str(model_dir)}}},
    }




def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


def test_a_server_started_before_the_crash_is_stopped_by_the_rerun_and_by_down(tmp_path, micro_model):
    state_dir = tmp_path / "serving"
    model = tmp_path / "model"
    model.symlink_to(micro_model)  # the state folder's path appears in no argv; the model path does
    obj = _isvc(model)
    script = textwrap.dedent(f"""
        import json, sys
        from serving.backends.local import LocalBackend
        LocalBackend({str(state_dir)!r}).apply(json.loads(sys.argv[1]))
    """)
    crashed = subprocess.run([sys.executable, "-c", script, json.dumps(obj)], env={**_env(), KILL_ENV: "local.spawned"},
                             capture_output=True, text=True, timeout=120)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    journal = list((state_dir / "procs").glob("*.json"))
    assert journal, "the spawn was not journaled"
    orphan = json.loads(journal[0].read_text())["pid"]
    assert psutil.pid_exists(orphan) and not (state_dir / "state.json").exists()

    backend = LocalBackend(state_dir, stop_timeout_s=2)
    try:
        backend.apply(obj)  # the rerun
        assert not psutil.pid_exists(orphan) or psutil.Process(orphan).status() == psutil.STATUS_ZOMBIE
        pids = backend.pids("llm", "default")
        assert set(pids) == {"llm-predictor-00001", "router"}
        running = [p for p in psutil.process_iter(["cmdline"]) if str(model) in " ".join(p.info["cmdline"] or [])
                   and not (p.info["cmdline"] or [""])[0].endswith("sh")]
        assert len(running) == 1, [p.info["cmdline"] for p in running]  # one server, not two
    finally:
        down = subprocess.run([sys.executable, "-m", "pipelines", "down", "--state-dir", str(state_dir)], env=_env(),
                              capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    time.sleep(0.5)
    left = [p for p in psutil.process_iter(["cmdline"]) if str(model) in " ".join(p.info["cmdline"] or [])]
    assert left == [], [p.info["cmdline"] for p in left]


def test_down_stops_an_orphan_even_when_state_json_was_never_written(tmp_path, micro_model):
    state_dir = tmp_path / "serving"
    model = tmp_path / "model"
    model.symlink_to(micro_model)
    script = textwrap.dedent(f"""
        import json, sys
        from serving.backends.local import LocalBackend
        LocalBackend({str(state_dir)!r}).apply(json.loads(sys.argv[1]))
    """)
    crashed = subprocess.run([sys.executable, "-c", script, json.dumps(_isvc(model))],
                             env={**_env(), KILL_ENV: "local.spawned"}, capture_output=True, text=True, timeout=120)
    assert crashed.returncode == -signal.SIGKILL
    orphan = json.loads(next((state_dir / "procs").glob("*.json")).read_text())["pid"]
    down = subprocess.run([sys.executable, "-m", "pipelines", "down", "--state-dir", str(state_dir)], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert not psutil.pid_exists(orphan) or psutil.Process(orphan).status() == psutil.STATUS_ZOMBIE
