"""Canary scenarios on the LOCAL backend: real model-server processes behind the real router.

Each test deploys v1 of a bootstrap model, sends a bounded stream of requests to
the router on loopback, and rolls v2 out with 2 s analysis intervals. The
metrics come from the servers' own ``/metrics`` (``scrape`` provider); the
quality probe goes through KServe-style tag routing (``latest``/``prev``).
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from serving.backends.base import PredictorStatus
from serving.isvc import PredictorSpec, ServiceSpec, render_isvc
from serving.metrics.factory import make_provider
from serving.rollout.analysis import AnalysisPolicy
from serving.rollout.controller import RolloutController, RolloutRefused, predictor_version
from serving.rollout.loadgen import LoadGenerator
from components.bootstrap.dataset import default_golden_set
from serving.rollout.quality import GoldenPrompt, probe
from serving.rollout.runner import run_rollout
from serving.rollout.state import RolloutPhase, RolloutState
from serving.rollout.strategy import RolloutStrategy
from tests.support.rollout_fakes import RecordingHooks

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

NAME, NS = "chat", "scenarios"
READY_S = 240.0
PROMPTS = [g.prompt for g in default_golden_set(12)]


def svc(model_dir, version: str, args: tuple[str, ...] = ()) -> ServiceSpec:
    return ServiceSpec(
        name=NAME,
        namespace=NS,
        predictor=PredictorSpec(storage_uri=str(model_dir), model_version=version, args=args, cpu="1", memory="1Gi"),
    )


def plan(**kw) -> RolloutStrategy:
    base = dict(
        steps=(10, 25, 50, 100), interval_s=2.0, lease_ttl_s=4.0, ready_timeout_s=READY_S, warmup_s=3.0,
        on_inconclusive="hold", max_inconclusive=5, quality_probe=True,
        # two model processes share 2 busy CPUs here: p95 of identical models differs by up to ~1.3x,
        # so the ratio limit sits at 2x (the injected 400 ms fault is ~10x)
        analysis_policy=AnalysisPolicy(min_requests=5, max_latency_ratio=2.0, max_ttft_ratio=None),
    )
    base.update(kw)
    return RolloutStrategy(**base)


@pytest.fixture
def local(tmp_path):
    from serving.backends.local import LocalBackend

    backend = LocalBackend(tmp_path / "serving", ready_timeout_s=READY_S)
    yield backend
    for ns, name in backend.services():
        backend.delete(name, ns)


def deploy(backend, model_dir) -> str:
    backend.apply(render_isvc(svc(model_dir, "1")))
    obj = backend.wait_ready(NAME, NS, READY_S)
    st = PredictorStatus.from_isvc(obj)
    assert st.ready, st.reason
    return backend.endpoints(NAME, NS).url


def traffic(url: str, rps: float = 30.0) -> LoadGenerator:
    """A bounded request stream to the router (loopback)."""
    return LoadGenerator(url, NAME, PROMPTS, rps=rps, concurrency=4, max_requests=6000, max_tokens=4)


def controller(backend, model_dir, version="2", args=(), quality=None, holder="ctl-1", **kw) -> RolloutController:
    return RolloutController(
        backend, svc(model_dir, version, args), plan(**kw), make_provider("scrape"),
        quality=quality, hooks=RecordingHooks(), holder=holder,
    )


def verdicts(result_or_state) -> list[tuple[int, str]]:
    rows = result_or_state.report["intervals"] if hasattr(result_or_state, "report") else result_or_state.intervals
    return [(r["weight"], r["phase"]) for r in rows]


def first_decisive(rows: list[tuple[int, str]]) -> tuple[int, str]:
    return next(r for r in rows if r[1] != "Inconclusive")


def assert_serves(backend, version: str) -> None:
    obj = backend.get(NAME, NS)
    assert predictor_version(obj["spec"]["predictor"]) == version
    assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
    st = PredictorStatus.from_isvc(obj)
    assert [t.percent for t in st.traffic if t.percent] == [100]
    url = backend.endpoints(NAME, NS).url
    seen = set()
    with httpx.Client(timeout=60) as client:
        for _ in range(6):
            r = client.post(f"{url}/openai/v1/completions", json={"model": NAME, "prompt": PROMPTS[0], "max_tokens": 2})
            assert r.status_code == 200, r.text
            seen.add(r.headers.get("x-llmops-model-version"))
    assert seen == {version}


def test_good_version_promotes_through_every_step(local, tiny_model, tmp_path):
    url = deploy(local, tiny_model)
    ctrl = controller(local, tiny_model)
    with traffic(url):
        result = run_rollout(ctrl, report_dir=tmp_path / "report", max_duration_s=400)
    assert result.outcome == "promoted", result.reason
    rows = verdicts(result)
    passed = [w for w, phase in rows if phase == "Successful"]
    assert passed == [10, 25, 50, 100], rows
    assert_serves(local, "2")
    assert ctrl.hooks.kinds == ["promoted"]
    report = json.loads((tmp_path / "report" / "rollout.json").read_text())
    assert report["outcome"] == "promoted" and report["target_version"] == "2"
    assert (tmp_path / "report" / "rollout.png").stat().st_size > 1000
    assert "| 4 |" in (tmp_path / "report" / "rollout.md").read_text() or len(rows) >= 4


@pytest.mark.parametrize(
    "args,needle",
    # an error-rate regression on real servers is rolled back through the CLI in test_rollout_cli_e2e.py
    # and test_controller_kill_matrix.py
    [(("--fault_latency_ms", "400"), "latency p95")],
    ids=["latency"],
)
def test_injected_fault_rolls_back_at_the_first_step(local, tiny_model, tmp_path, args, needle):
    url = deploy(local, tiny_model)
    # the sequential judge lets a step pass once it has min_requests: ask for ~2 intervals' worth at 10 %
    policy = AnalysisPolicy(min_requests=12, max_latency_ratio=2.0, max_ttft_ratio=None)
    ctrl = controller(local, tiny_model, args=args, analysis_policy=policy)
    with traffic(url):
        result = run_rollout(ctrl, report_dir=tmp_path / "report", max_duration_s=300)
    assert result.outcome == "rolled_back", result.reason
    assert first_decisive(verdicts(result)) == (10, "Failed")
    assert needle in result.reason and "at 10%" in result.reason
    assert_serves(local, "1")
    assert ctrl.hooks.kinds == ["rolled_back"]


def _recorded_golden(url: str, n: int = 6) -> list[GoldenPrompt]:
    """The stable model's own greedy answers become the golden set (a behavioural snapshot)."""
    out = []
    with httpx.Client(timeout=60) as client:
        for g in default_golden_set(20, seed=7):
            r = client.post(
                f"{url}/openai/v1/completions",
                json={"model": NAME, "prompt": g.prompt, "max_tokens": 16, "temperature": 0, "stop": ["\n"]},
            )
            r.raise_for_status()
            answer = r.json()["choices"][0]["text"].split("\n")[0].strip()
            if answer:
                out.append(GoldenPrompt(g.prompt, answer))
            if len(out) == n:
                break
    assert len(out) >= 3, "the stable model gave too few non-empty answers to build a golden set"
    return out


def test_worse_model_rolls_back_on_quality(local, tiny_model, micro_model, tmp_path):
    url = deploy(local, tiny_model)
    golden = _recorded_golden(url)

    def quality(canary_url: str, stable_url: str):
        return probe(canary_url, stable_url, golden, model=NAME, max_tokens=16, timeout_s=60)

    ctrl = controller(local, micro_model, quality=quality)  # a different (random) model: answers differ
    with traffic(url):
        result = run_rollout(ctrl, report_dir=tmp_path / "report", max_duration_s=300)
    assert result.outcome == "rolled_back", result.reason
    assert first_decisive(verdicts(result)) == (10, "Failed")
    assert "golden-prompt score" in result.reason
    row = next(r for r in result.report["intervals"] if r["phase"] == "Failed")
    assert row["quality"]["stable_score"] == 1.0 and row["quality"]["canary_score"] < 1.0
    assert_serves(local, "1")


def test_silent_canary_is_inconclusive_and_held_then_rolled_back(local, tiny_model, tmp_path):
    deploy(local, tiny_model)
    policy = AnalysisPolicy(min_requests=5, max_latency_ratio=2.0, max_ttft_ratio=None, max_intervals_per_step=1)
    ctrl = controller(local, tiny_model, max_inconclusive=2, analysis_policy=policy)  # no traffic generator: nobody calls
    result = run_rollout(ctrl, report_dir=tmp_path / "report", max_duration_s=300)
    assert result.outcome == "rolled_back"
    assert verdicts(result) == [(10, "Inconclusive"), (10, "Inconclusive")]
    assert "inconclusive for 2 intervals" in result.reason and "too little traffic" in result.reason
    assert_serves(local, "1")


class _Killed(Exception):
    """Stands for the controller process dying between two ticks."""


def _kill_at(action: str, weight: int | None = None):
    def on_outcome(out):
        if out.action == action and (weight is None or out.weight == weight):
            raise _Killed(f"killed after {action} at {out.weight}%")

    return on_outcome


@pytest.mark.parametrize(
    "args,kill_action,kill_weight,expected",
    [
        # every other kill point, healthy and regressed, with the same holder resuming at once:
        # tests/integration/faults/test_controller_kill_matrix.py (llmops rollout, SIGKILL)
        ((), "advanced", 50, "promoted"),
    ],
    ids=["mid-rollout"],
)
def test_killed_controller_restarts_and_converges(local, tiny_model, args, kill_action, kill_weight, expected):
    url = deploy(local, tiny_model)
    ttl = 15.0  # long enough that the refusal below happens while the dead controller's lease runs
    first = controller(local, tiny_model, args=args, holder="ctl-dead", lease_ttl_s=ttl)
    with traffic(url):
        with pytest.raises(_Killed):
            run_rollout(first, on_outcome=_kill_at(kill_action, kill_weight), max_duration_s=300)
        state = RolloutState.from_obj(local.get(NAME, NS))
        assert not state.phase.terminal or state.hooks_pending
        # a second controller is refused while the dead one's lease runs
        second = controller(local, tiny_model, args=args, holder="ctl-new", lease_ttl_s=ttl)
        with pytest.raises(RolloutRefused, match="'ctl-dead' holds the rollout lease"):
            second.step(time.time())
        lease = json.loads(local.get(NAME, NS)["metadata"]["annotations"]["llmops.io/rollout-lease"])
        time.sleep(max(0.0, lease["expires"] - time.time()) + 0.2)
        result = run_rollout(second, max_duration_s=300)
    assert result.outcome == expected, result.reason
    final = RolloutState.from_obj(local.get(NAME, NS))
    assert final.rollout_id == state.rollout_id  # the same rollout was resumed, not a new one
    assert final.phase is (RolloutPhase.PROMOTED if expected == "promoted" else RolloutPhase.ROLLED_BACK)
    assert_serves(local, "2" if expected == "promoted" else "1")
    assert second.hooks.kinds == (["promoted"] if expected == "promoted" else ["rolled_back"])


def test_concurrent_second_rollout_is_refused(local, tiny_model, micro_model):
    deploy(local, tiny_model)
    a = controller(local, tiny_model, holder="ctl-a")
    a.step(time.time())
    b = controller(local, micro_model, version="3", holder="ctl-b")
    with pytest.raises(RolloutRefused, match=r"'ctl-a' holds the rollout lease \(rollout of v2"):
        b.step(time.time())
