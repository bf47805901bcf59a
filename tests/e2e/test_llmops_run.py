"""The whole release through ``llmops run`` (kfp.local), three runs on one state folder.

1. A fine-tuned candidate passes the gate, is registered, imaged, canaried and
   promoted; MLflow's ``champion`` names it and the endpoint answers the
   official ``openai`` client.
2. A worse candidate (the untrained base model, ``--no-finetune``) is stopped by
   the gate: exit 1, the champion does not move.
3. A good candidate whose server has a latency fault injected is rolled back by
   the canary; the previous champion still serves.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

COMMON = [
    "--dataset", "bootstrap://tasks?train=1500&eval=60",
    "--steps", "300",
    "--interval", "4",
    "--min-requests", "8",
    "--traffic-steps", "50,100",
    "--load-rps", "10",
]


def _llmops(state: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, MLFLOW_TRACKING_URI="", PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI")
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args, "--state-dir", str(state)] if args[0] == "run"
        else [sys.executable, "-m", "pipelines", *args],
        cwd=state.parent, env=env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    state = root / ".llmops"
    yield state
    subprocess.run([sys.executable, "-m", "pipelines", "down", "--state-dir", str(state / "serving")],
                   cwd=root, capture_output=True, timeout=120)
    from pipelines.local_services import stop_local_registry

    stop_local_registry(state)


def _champion(state: Path):
    from model_registry import get_champion

    return get_champion("llm", tracking_uri=f"sqlite:///{state / 'mlflow' / 'mlflow.db'}")


def test_release_promotes_then_gate_stops_then_canary_rolls_back(state):
    import openai

    # 1. a good release
    first = _llmops(state, "run", *COMMON)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "release promoted" in first.stdout
    champ = _champion(state)
    assert champ is not None and champ.version == "1"
    assert champ.image and "@sha256:" in champ.image
    endpoint = next(line.split()[1] for line in first.stdout.splitlines() if line.startswith("endpoint:"))
    client = openai.OpenAI(base_url=endpoint, api_key="none")
    answer = client.completions.create(model="llm", prompt="Q: convert 7 km to m\nA:", max_tokens=6, temperature=0)
    assert answer.choices[0].text.strip(), "the served model answered nothing"

    # 2. a worse candidate: the untrained base model is stopped by the gate
    worse = _llmops(state, "run", *COMMON, "--no-finetune")
    assert worse.returncode == 1, worse.stdout[-3000:] + worse.stderr[-3000:]
    assert "release gate_failed" in worse.stdout and "vs reference" in worse.stdout
    assert _champion(state).version == "1"

    # 3. a good candidate with injected serving latency: the canary rolls it back
    slow = _llmops(state, "run", *COMMON, "--serving-args", "--fault_latency_ms 600")
    assert slow.returncode == 1, slow.stdout[-3000:] + slow.stderr[-3000:]
    assert "release rolled_back" in slow.stdout
    assert _champion(state).version == "1"
    status = _llmops(state, "status", "--state-dir", str(state), "--json")
    assert '"champion": "1"' in status.stdout
    answer = client.completions.create(model="llm", prompt="Q: convert 7 km to m\nA:", max_tokens=6, temperature=0)
    assert answer.choices[0].text.strip()


def test_bad_parameters_are_refused_before_anything_runs(tmp_path):
    state = tmp_path / ".llmops"
    for args, needle in [
        (["--base-model", "ftp://x/y"], "unknown scheme 'ftp:'"),
        (["--steps", "-3"], "finetune_steps=-3"),
        (["--traffic-steps", "10,50"], "the last step must be 100"),
        (["--max-error-rate", "2"], "max_error_rate=2.0"),
    ]:
        out = _llmops(state, "run", *args, timeout=120)
        assert out.returncode == 2, out.stderr
        assert needle in out.stderr
    assert not state.exists(), "a refused run must not create state"
