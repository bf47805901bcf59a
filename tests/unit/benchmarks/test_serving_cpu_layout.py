"""The serving benchmark keeps its load client off the server's cores, and the client's workers to its own."""

from __future__ import annotations

import argparse
import os

import pytest

from benchmarks.serving import cpu_layout, median_run, parse_cpus
from tests.support import guidellm


def _args(**kw):
    base = dict(threads=1, server_cpus=None, client_cpus=None, no_pin=False)
    return argparse.Namespace(**(base | kw))


def test_cpu_lists_parse_like_taskset():
    assert parse_cpus("0") == (0,)
    assert parse_cpus("0,2-3") == (0, 2, 3)
    assert parse_cpus("3-4, 1") == (1, 3, 4)


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--server_cpus", "zero", "'zero' is not a CPU list such as 0 or 0,2-3"),
    ("--client_cpus", "3-1", "'3-1' names no CPU"),
    ("--repeats", "0", "--repeats must be >= 1, got 0"),
])  # fmt: skip
def test_a_bad_cpu_list_exits_2_with_one_line(flag, value, message):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[3] / "benchmarks" / "serving.py"
    out = subprocess.run([sys.executable, str(script), flag, value], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--concurrency", "0"], "must be >= 1"),
    (["--cpus", "4096"], "--cpus [4096] is not within the CPUs this process may use"),
])  # fmt: skip
def test_engine_batching_refuses_bad_flags_with_exit_2(args, message):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[3] / "benchmarks" / "engine_batching.py"
    out = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_default_layout_gives_the_server_its_threads_and_the_client_the_rest(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    layout = cpu_layout(_args(threads=2))
    assert layout["server"] == (0, 1) and layout["client"] == (2, 3)
    assert "GuideLLM on [2, 3] (2 worker processes)" in layout["note"]


def test_no_cpu_left_or_overlap_means_no_pinning_and_says_why(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert cpu_layout(_args())["server"] is None
    assert "no CPU is left for the client" in cpu_layout(_args())["note"]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    clash = cpu_layout(_args(server_cpus=(0, 1), client_cpus=(1,)))
    assert clash["client"] is None and "overlap" in clash["note"]
    assert cpu_layout(_args(no_pin=True))["client"] is None


def test_guidellm_run_refuses_an_empty_cpu_set_and_zero_workers(tmp_path):
    base = dict(target="http://x/openai/v1", model="m", tokenizer=tmp_path)
    with pytest.raises(ValueError, match="worker_processes must be >= 1"):
        guidellm.GuideLLMRun(**base, worker_processes=0).validate()
    with pytest.raises(ValueError, match="at least one CPU id"):
        guidellm.GuideLLMRun(**base, cpus=()).validate()


def test_the_median_run_stands_for_its_repeats():
    runs = [{"id": i, "ratio": {"throughput": t}} for i, t in enumerate([0.9, 0.6, 0.75, 0.8])]
    assert median_run(runs)["id"] == 2  # 0.6, 0.75 | 0.8, 0.9: the lower middle of an even count
    assert median_run(runs[:3])["id"] == 2
    assert median_run(runs[:1])["id"] == 0
