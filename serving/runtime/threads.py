"""How many torch threads the generation worker gets: the CPUs its container may use.

``os.cpu_count()`` is the node's CPUs, not the container's: a pod limited to 4 CPUs on a
64-core node that starts 64 intra-op threads is throttled by the CFS quota and runs far
slower than with 4. The order, as Go's automaxprocs and the JVM do it:

1. cgroup v2 ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``), on the process's
   cgroup and every ancestor up to the mount (the tightest wins);
2. cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota ``-1``: no limit);
3. the scheduler affinity mask (``os.sched_getaffinity``: cpusets, ``taskset``).

A fractional quota is rounded down (at least 1): threads beyond the quota only queue for it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count and where it came from (logged at start)."""

    threads: int
    source: str  # "flag", "cgroup v2 cpu.max", "cgroup v1 cfs quota", "affinity", "torch default"
    detail: str = ""

    def describe(self) -> str:
        """One line for the start-up log."""
        return f"{self.threads} ({self.source}{': ' + self.detail if self.detail else ''})"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cgroup_paths(proc_cgroup: Path) -> dict[str, str]:
    """Controller (``""`` for v2) -> cgroup path, from ``/proc/self/cgroup``."""
    out: dict[str, str] = {}
    for line in (_read(proc_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                out[controller] = parts[2]
    return out


def _ancestors(base: Path, rel: str) -> list[Path]:
    """``base/rel`` and each parent up to ``base`` (with cgroup namespaces ``rel`` is often ``/``)."""
    here = base / rel.lstrip("/")
    dirs = [here]
    while here != base and base in here.parents:
        here = here.parent
        dirs.append(here)
    return dirs


def cgroup_v2_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> tuple[float, str] | None:
    """CPUs allowed by cgroup v2 ``cpu.max`` (tightest along the path), with the file read; None: no limit."""
    if not (root / "cgroup.controllers").exists():
        return None
    best: tuple[float, str] | None = None
    for d in _ancestors(root, _cgroup_paths(proc_cgroup).get("", "/")):
        text = _read(d / "cpu.max")
        if not text:
            continue
        fields = text.split()
        if len(fields) != 2 or fields[0] == "max":
            continue
        try:
            cpus = int(fields[0]) / int(fields[1])
        except (ValueError, ZeroDivisionError):
            continue
        if best is None or cpus < best[0]:
            best = (cpus, f"{d / 'cpu.max'} = {text}")
    return best


def cgroup_v1_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> tuple[float, str] | None:
    """CPUs allowed by cgroup v1 CFS quota, with the file read; None: no limit."""
    rel = _cgroup_paths(proc_cgroup).get("cpu", "/")
    for mount in (root / "cpu,cpuacct", root / "cpu"):
        if not mount.is_dir():
            continue
        for d in _ancestors(mount, rel):
            quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
            if quota is None or period is None:
                continue
            try:
                q, p = int(quota), int(period)
            except ValueError:
                continue
            if q > 0 and p > 0:
                return q / p, f"{d / 'cpu.cfs_quota_us'} = {q}, period {p}"
        return None
    return None


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (``os.cpu_count()`` where the platform has no mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def container_threads(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> ThreadChoice:
    """The thread count for this container: its CPU quota, else its affinity mask."""
    cpus = affinity_cpus()
    for source, probe in (("cgroup v2 cpu.max", cgroup_v2_quota), ("cgroup v1 cfs quota", cgroup_v1_quota)):
        found = probe(root, proc_cgroup)
        if found is not None:
            quota, detail = found
            return ThreadChoice(max(1, min(cpus, math.floor(quota))), source, f"{quota:g} CPUs, {detail}")
    return ThreadChoice(cpus, "affinity", f"{cpus} CPUs in the affinity mask")


TORCH_THREADS_ENV = "LLMOPS_TORCH_THREADS"


def whole_threads(text: str) -> int:
    """A thread count as given on the command line or in the environment: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise ValueError(f"must be >= 0 (0 keeps torch's default), got {value}")
    return value


def requested_threads(flag: int | None, environ) -> tuple[int | None, str]:
    """(threads asked for, where from): ``--torch_threads``, else ``$LLMOPS_TORCH_THREADS``, else None.

    Raises:
        ValueError: the environment's value is not a whole number >= 0 (the message names the variable).
    """
    if flag is not None:
        return flag, "flag"
    text = environ.get(TORCH_THREADS_ENV, "").strip()
    if not text:
        return None, ""
    try:
        return whole_threads(text), f"${TORCH_THREADS_ENV}"
    except ValueError as exc:
        raise ValueError(f"${TORCH_THREADS_ENV}: {exc}") from None


def choose_threads(flag: int | None, source: str = "flag") -> ThreadChoice:
    """A positive ``flag`` is kept, 0 keeps torch's default, None sizes to the container."""
    if flag is None:
        return container_threads()
    if flag == 0:
        import torch

        return ThreadChoice(torch.get_num_threads(), "torch default")
    return ThreadChoice(flag, source)
