"""Run a real Prometheus (Debian's ``/usr/bin/prometheus``) for tests.

``run_prometheus(targets, workdir)`` writes a config that scrapes the given
``host:port`` or ``http://host:port/path`` targets every second, starts
Prometheus on a free loopback port with its TSDB in ``workdir``, waits for
``/-/ready`` and yields the base URL; the process is killed on exit.
``wait_for_scrapes`` waits until every target has been scraped successfully.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, Sequence
from urllib.parse import urlsplit

import httpx
import yaml

PROMETHEUS = os.environ.get("LLMOPS_PROMETHEUS_BIN", "/usr/bin/prometheus")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prometheus_available() -> bool:
    return bool(shutil.which(PROMETHEUS) or Path(PROMETHEUS).is_file())


def _static_configs(
    targets: Sequence[str], labels: dict[str, dict[str, str]] | None = None, common_labels: dict[str, str] | None = None,
) -> list[dict]:
    """One scrape job per metrics path (Prometheus scrapes one path per job).

    ``labels``: per target (host:port -> labels); ``common_labels``: on every series (as a PodMonitor adds ``namespace``).
    """
    by_path: dict[tuple[str, str], list[str]] = {}
    for t in targets:
        parts = urlsplit(t if "://" in t else f"http://{t}")
        key = (parts.scheme or "http", parts.path or "/metrics")
        by_path.setdefault(key, []).append(parts.netloc)
    jobs = []
    for i, ((scheme, path), hosts) in enumerate(sorted(by_path.items())):
        if labels:  # target labels, as a PodMonitor's relabelling attaches them (e.g. model_version, namespace)
            statics = [{"targets": [h], "labels": labels.get(h, {})} for h in hosts]
        else:
            statics = [{"targets": hosts}]
        jobs.append(
            {
                "job_name": f"llmops-{i}",
                "scheme": scheme,
                "metrics_path": path,
                "scrape_interval": "1s",
                "scrape_timeout": "900ms",
                "static_configs": [
                    {**st, "labels": {**(common_labels or {}), **st.get("labels", {})}} if common_labels else st
                    for st in statics
                ],
            }
        )
    return jobs


@contextlib.contextmanager
def run_prometheus(
    targets: Sequence[str], workdir: str | Path, ready_timeout_s: float = 60.0,
    labels: dict[str, dict[str, str]] | None = None, common_labels: dict[str, str] | None = None,
    scrape_configs: Sequence[dict] = (),
) -> Iterator[str]:
    """Start Prometheus scraping ``targets`` (and the extra ``scrape_configs`` jobs); yield its URL.

    ``labels`` are per target; ``common_labels`` are added to every scraped series (as a PodMonitor adds ``namespace``).

    Raises:
        RuntimeError: the binary is missing or the server did not become ready
            (the message carries the end of its log).
    """
    if not prometheus_available():
        raise RuntimeError(
            f"{PROMETHEUS} not found: install the Debian package (apt-get install prometheus) "
            "or set LLMOPS_PROMETHEUS_BIN"
        )
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": _static_configs(targets, labels, common_labels) + list(scrape_configs or ()),
    }
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = workdir / "prometheus.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready after {ready_timeout_s}s: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def wait_for_scrapes(url: str, min_scrapes_after: float | None = None, timeout_s: float = 30.0) -> None:
    """Wait until every active target is up and was last scraped after ``min_scrapes_after``.

    Args:
        url: Prometheus base URL.
        min_scrapes_after: unix time the last scrape must be later than (default: now).
        timeout_s: give up after this long.

    Raises:
        TimeoutError: with the targets' state.
    """
    after = time.time() if min_scrapes_after is None else min_scrapes_after
    deadline = time.monotonic() + timeout_s
    targets: list = []
    while time.monotonic() < deadline:
        targets = httpx.get(f"{url}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
        if targets and all(
            t["health"] == "up" and _parse_ts(t["lastScrape"]) > after for t in targets
        ):
            return
        time.sleep(0.2)
    raise TimeoutError(f"prometheus targets not scraped in {timeout_s}s: {targets}")


def _parse_ts(value: str) -> float:
    """RFC 3339 with up to nanoseconds (Go's format) -> unix seconds."""
    import re
    from datetime import datetime

    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", value)
    if not m:
        return 0.0
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(m.group(1) + tz).timestamp() + float(m.group(2) or 0)
