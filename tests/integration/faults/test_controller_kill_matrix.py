"""Crash-resume matrix of the rollout controller's own side effects (apply, readiness, traffic change, verdicts).

``llmops rollout`` runs as a user runs it (local backend, real model servers, its
load generator, the MLflow hooks), in a process that SIGKILLs itself at a named
point right after one of the controller's writes (``LLMOPS_KILL_AT``, see
:mod:`llmops_core.faults`): the canary applied, its first interval started,
traffic moved to the next step, the promotion written, the rollback written.
The same command is then run again with the same ``--holder`` (a restarted CI
job): it must resume at once and end as an uninterrupted run would, with the
spec that serves, the state annotation, the champion alias, the history (one
entry per rollout) and the running processes in agreement. The registry's own
kill points (lock held, alias moves, events) are in ``test_registry_kill_matrix.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from llmops_core.faults import KILL_ENV

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NAME, NS = "chat", "kill"
# (version kind, kill point): a healthy version is promoted, a regressed one (80% errors) rolled back
MATRIX = [
    ("healthy", "rollout.applied"),
    ("healthy", "rollout.interval_started"),
    ("healthy", "rollout.traffic_changed"),
    ("healthy", "rollout.promotion_written"),
    ("regressed", "rollout.applied"),
    ("regressed", "rollout.interval_started"),
    ("regressed", "rollout.rollback_written"),
]
REGRESSED = ["--predictor-arg=--fault_error_rate", "--predictor-arg=0.8"]


def _env(**extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", **extra}
    env.pop(KILL_ENV, None)
    env.update(extra)
    return env


class Box:
    def __init__(self, tmp, model):
        import mlflow

        from model_registry.types import STATUS_TAG

        self.state_dir = tmp / "serving"
        self.model = tmp / "model"
        self.model.symlink_to(model)  # the servers' argv names this path: it finds their processes
        self.tracking = f"sqlite:///{tmp / 'mlflow.db'}"
        client = mlflow.MlflowClient(tracking_uri=self.tracking)
        client.create_registered_model(NAME)
        for _ in range(len(MATRIX) + 1):
            client.create_model_version(NAME, source=str(model), tags={STATUS_TAG: "ready"})
        self.next_version = 1

    def rollout(self, version: int, extra: list[str], kill: str | None = None) -> subprocess.CompletedProcess:
        args = [sys.executable, "-m", "pipelines", "rollout", "--backend", "local", "--state-dir", str(self.state_dir),
                "--name", NAME, "--namespace", NS, "--storage-uri", str(self.model), "--model-version", str(version),
                "--registry-model", NAME, "--tracking-uri", self.tracking, "--holder", f"ci-job-{version}",
                "--steps", "50,100", "--interval", "1", "--min-requests", "5", "--load-rps", "20",
                "--max-latency-ratio", "3", "--no-quality", "--timeout", "240", *extra]
        env = _env(**({KILL_ENV: kill} if kill else {}))
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, cwd=self.state_dir.parent)

    def servers(self) -> list[psutil.Process]:
        """Model-server processes serving this box's model (not their launcher shells)."""
        from pathlib import Path

        out = []
        for p in psutil.process_iter(["cmdline"]):
            cmd = p.info["cmdline"] or []
            if cmd[:1] and cmd[0].endswith("sh") or "--model_dir" not in cmd or "serving" not in cmd:
                continue
            model_dir = cmd[cmd.index("--model_dir") + 1] if cmd.index("--model_dir") + 1 < len(cmd) else ""
            if Path(model_dir).resolve() == self.model.resolve() and NAME in cmd:
                out.append(p)
        return out


@pytest.fixture(scope="module")
def box(tmp_path_factory, micro_model):
    b = Box(tmp_path_factory.mktemp("killbox"), micro_model)
    b.state_dir.mkdir()
    first = b.rollout(1, [])
    assert first.returncode == 0, first.stdout + first.stderr
    b.next_version = 2
    try:
        yield b
    finally:
        subprocess.run([sys.executable, "-m", "pipelines", "down", "--state-dir", str(b.state_dir)], env=_env(),
                       capture_output=True, text=True, timeout=120)


def _champion(box) -> str | None:
    from model_registry import get_champion

    champ = get_champion(NAME, tracking_uri=box.tracking)
    return champ.version if champ else None


@pytest.mark.parametrize("kind,point", MATRIX, ids=[f"{k}-{p.split('.', 1)[1]}" for k, p in MATRIX])
def test_killed_controller_converges_on_the_rerun(box, kind, point):
    from model_registry import history
    from serving.backends.local import LocalBackend
    from serving.rollout.controller import predictor_version
    from serving.rollout.state import RolloutPhase, RolloutState

    version, before = str(box.next_version), _champion(box)
    box.next_version += 1
    extra = REGRESSED if kind == "regressed" else []
    crashed = box.rollout(int(version), extra, kill=point)
    assert crashed.returncode == -signal.SIGKILL, f"never reached {point}:\n{crashed.stdout[-2000:]}{crashed.stderr[-2000:]}"

    started = time.monotonic()
    rerun = box.rollout(int(version), extra)
    expected_rc, serving = (0, version) if kind == "healthy" else (1, before)
    assert rerun.returncode == expected_rc, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "holds the rollout lease" not in rerun.stderr, "the same holder waited for its own lease"
    assert time.monotonic() - started < 200

    backend = LocalBackend(box.state_dir)
    obj = backend.get(NAME, NS)
    state = RolloutState.from_obj(obj)
    assert state.target_version == version and not state.hooks_pending, state
    assert state.phase is (RolloutPhase.PROMOTED if kind == "healthy" else RolloutPhase.ROLLED_BACK), state
    assert predictor_version(obj["spec"]["predictor"]) == serving
    assert _champion(box) == serving
    events = [e for e in history(NAME, tracking_uri=box.tracking) if version in (e.to_version, e.from_version)]
    kinds = [e.kind for e in events]
    assert kinds == (["promotion"] if kind == "healthy" else ["rollback"]), events  # exactly one, never twice
    answers = {httpx.post(f"{backend.endpoints(NAME, NS).url}/openai/v1/completions", timeout=30,
                          json={"model": NAME, "prompt": "2+2=", "max_tokens": 2}).headers.get("x-llmops-model-version")
               for _ in range(6)}
    assert answers == {serving}, answers
    revisions = {r for r in backend.pids(NAME, NS) if r != "router"}
    assert len(box.servers()) == len(revisions), (
        f"{len(box.servers())} model servers run for revisions {sorted(revisions)}: a crash left a duplicate")


def test_down_leaves_no_process(box):
    done = subprocess.run([sys.executable, "-m", "pipelines", "down", "--state-dir", str(box.state_dir)], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 10
    while box.servers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert box.servers() == []
