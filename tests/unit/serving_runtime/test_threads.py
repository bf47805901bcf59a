"""Torch threads sized to the container: cgroup v2 cpu.max, v1 CFS quota, else the affinity mask."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from serving.runtime import threads
from serving.runtime.threads import choose_threads, container_threads, requested_threads


@pytest.fixture
def eight_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _v2(tmp_path, own: str, parent: str | None = None, cg: str = "/kubepods/pod1/ctr") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    _write(root, "cgroup.controllers", "cpuset cpu io memory pids\n")
    own_dir = Path(cg.strip("/"))
    _write(root, str(own_dir / "cpu.max"), own)
    if parent is not None:
        _write(root, str(own_dir.parent / "cpu.max"), parent)
    proc = tmp_path / "proc_cgroup"
    proc.write_text(f"0::{cg}\n")
    return root, proc


@pytest.mark.parametrize(
    ("own", "parent", "expected", "source"),
    [
        ("400000 100000\n", None, 4, "cgroup v2 cpu.max"),  # a 4-CPU limit on an 8-CPU node: 4 threads
        ("250000 100000\n", None, 2, "cgroup v2 cpu.max"),  # 2.5 CPUs: rounded down
        ("50000 100000\n", None, 1, "cgroup v2 cpu.max"),  # half a CPU: still one thread
        ("max 100000\n", "300000 100000\n", 3, "cgroup v2 cpu.max"),  # the pod's limit, on the parent, binds
        ("max 100000\n", None, 8, "affinity"),  # no limit: the affinity mask
        ("1600000 100000\n", None, 8, "cgroup v2 cpu.max"),  # a quota above the mask: the mask
    ],
)
def test_cgroup_v2_cpu_max(tmp_path, eight_cpus, own, parent, expected, source):
    root, proc = _v2(tmp_path, own, parent)
    choice = container_threads(root, proc)
    assert (choice.threads, choice.source) == (expected, source)


def test_cgroup_v2_inside_a_cgroup_namespace(tmp_path, eight_cpus):
    """With cgroupns the process sees itself at '/', and the container's cpu.max at the mount root."""
    root, proc = _v2(tmp_path, "200000 100000\n", cg="/")
    choice = container_threads(root, proc)
    assert (choice.threads, choice.source) == (2, "cgroup v2 cpu.max")
    assert "cpu.max = 200000 100000" in choice.describe()


@pytest.mark.parametrize(("quota", "expected", "source"), [("300000", 3, "cgroup v1 cfs quota"), ("-1", 8, "affinity")])
def test_cgroup_v1_cfs_quota(tmp_path, eight_cpus, quota, expected, source):
    root = tmp_path / "cgroup"
    _write(root, "cpu,cpuacct/docker/abc/cpu.cfs_quota_us", quota + "\n")
    _write(root, "cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
    proc = tmp_path / "proc_cgroup"
    proc.write_text("12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n")
    choice = container_threads(root, proc)
    assert (choice.threads, choice.source) == (expected, source)


def test_no_cgroup_falls_back_to_the_affinity_mask(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5})  # e.g. taskset -c 0,2,5
    choice = container_threads(tmp_path / "none", tmp_path / "none")
    assert (choice.threads, choice.source) == (3, "affinity")


def test_server_flag_env_and_default(monkeypatch, tmp_path, eight_cpus):
    """--torch_threads wins; $LLMOPS_TORCH_THREADS next (the local backend sets 1); else the container."""
    from serving.runtime.server import build_parser

    monkeypatch.delenv("LLMOPS_TORCH_THREADS", raising=False)
    assert build_parser().parse_args(["--torch_threads", "3"]).torch_threads == 3
    flag = build_parser().parse_args([]).torch_threads
    assert flag is None
    root, proc = _v2(tmp_path, "400000 100000\n", cg="/")
    monkeypatch.setattr(threads.container_threads, "__defaults__", (root, proc))
    assert choose_threads(flag).threads == 4
    assert choose_threads(2).describe() == "2 (flag)"
    assert requested_threads(None, {"LLMOPS_TORCH_THREADS": "1"}) == (1, "$LLMOPS_TORCH_THREADS")
    assert requested_threads(3, {"LLMOPS_TORCH_THREADS": "1"}) == (3, "flag")
    assert requested_threads(None, {}) == (None, "")
    assert choose_threads(*requested_threads(None, {"LLMOPS_TORCH_THREADS": "2"})).describe() == "2 ($LLMOPS_TORCH_THREADS)"


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["--torch_threads", "-1"], None, "argument --torch_threads: must be >= 0 (0 keeps torch's default), got -1"),
    (["--torch_threads", "two"], None, "argument --torch_threads: 'two' is not a whole number"),
    ([], "x", "$LLMOPS_TORCH_THREADS: 'x' is not a whole number"),
])  # fmt: skip
def test_a_bad_thread_count_exits_2_with_one_line(tmp_path, argv, env, message):
    import os
    import subprocess
    import sys
    from pathlib import Path

    environ = {k: v for k, v in os.environ.items() if k != "LLMOPS_TORCH_THREADS"}
    environ |= {"LLMOPS_TORCH_THREADS": env} if env else {}
    out = subprocess.run([sys.executable, "-m", "serving", "--model_dir", str(tmp_path), *argv], env=environ,
                         cwd=Path(__file__).resolve().parents[3], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
