"""The fine-tune loop under torchrun: 2 CPU processes (gloo) against 1, kill and resume on shared storage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from components.finetune import FinetuneConfig, finetune
from tests.support.torchrun import REPO, torchrun, torchrun_cmd, torchrun_env

pytestmark = [pytest.mark.integration]

STEPS = dict(max_steps=20, batch_size=8, learning_rate=3e-3, warmup_steps=4, log_every=10, seed=3)
CURVE_TOL = 1e-4  # absolute, per step; measured ~5e-7 (float summation order differs between 1 and 2 ranks)
WEIGHT_TOL = 1e-4  # largest absolute weight difference after training


def _weights(model_dir):
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def _max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def two_process_full(still_model, small_data, tmp_path_factory):
    """The uninterrupted 2-process full fine-tune (checkpoints on a shared folder every 5 steps)."""
    root = tmp_path_factory.mktemp("two-full")
    cfg = {**STEPS, "checkpoint_every": 5, "keep_checkpoints": 5}
    result = torchrun(2, still_model, small_data["train"], root / "out", cfg, checkpoint=str(root / "pvc"))
    return root / "out", result


@pytest.mark.parametrize("method, strategy", [("full", "ddp"), ("lora", "ddp"), ("full", "fsdp")])
def test_two_half_batches_follow_one_full_batch(method, strategy, still_model, small_data, tmp_path, request):
    from components.evaluate.evaluator import measure

    if (method, strategy) == ("full", "ddp"):
        out2, r2 = request.getfixturevalue("two_process_full")
    else:
        out2 = tmp_path / "two"
        r2 = torchrun(2, still_model, small_data["train"], out2, {**STEPS, "method": method, "checkpoint_every": 0},
                      strategy=strategy)
    r1 = finetune(still_model, small_data["train"], tmp_path / "one",
                  FinetuneConfig(**STEPS, method=method, checkpoint_every=0))

    assert r2["world_size"] == 2 and r1.world_size == 1 and r2["steps"] == r1.steps == STEPS["max_steps"]
    one = json.loads(r1.loss_curve_json.read_text())["loss"]
    two = json.loads((out2 / "loss_curve.json").read_text())["loss"]
    assert len(one) == len(two) == STEPS["max_steps"]
    assert max(abs(a - b) for a, b in zip(one, two)) <= CURVE_TOL
    assert one[-1] < one[0] - 0.1  # it learned: the curves are not trivially equal
    assert _max_diff(_weights(r1.model_dir), _weights(out2 / "model")) <= WEIGHT_TOL
    if (method, strategy) != ("full", "ddp"):
        return  # equal weights evaluate equally; one evaluation pair (below) shows it

    m1, p1 = measure(r1.model_dir, small_data["eval"], max_examples=6)
    m2, p2 = measure(out2 / "model", small_data["eval"], max_examples=6)
    assert [p for _, p in p1] == [p for _, p in p2]  # the same answers, greedy decoding
    assert m1["exact_match"] == m2["exact_match"]
    assert m1["perplexity"] == pytest.approx(m2["perplexity"], rel=1e-4)


def test_killed_two_process_run_resumes_from_the_shared_checkpoint(two_process_full, still_model, small_data, tmp_path):
    ref_out, ref = two_process_full
    pvc = tmp_path / "pvc"  # the shared checkpoint location, outside the run's own output folder
    cfg = {**STEPS, "checkpoint_every": 5, "keep_checkpoints": 5}
    cmd = torchrun_cmd(2, still_model, small_data["train"], tmp_path / "out", cfg, checkpoint=str(pvc))
    proc = subprocess.Popen(cmd, cwd=REPO, env=torchrun_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (pvc / "step-0000005" / "state.json").exists():
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 240s"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the node dies: torchrun and both ranks
    finally:
        proc.wait(30)
    assert not (tmp_path / "out" / "finetune_result.json").exists(), "killed too late: the run had finished"

    resumed = torchrun(2, still_model, small_data["train"], tmp_path / "out", cfg, checkpoint=str(pvc))
    assert resumed["resumed_from_step"] in (5, 10, 15) and resumed["steps"] == STEPS["max_steps"]
    assert _max_diff(_weights(tmp_path / "out" / "model"), _weights(ref_out / "model")) == 0.0
    assert json.loads((tmp_path / "out" / "loss_curve.json").read_text())["loss"] == \
        json.loads((ref_out / "loss_curve.json").read_text())["loss"]
