"""Loop the controller's ticks with a real clock, show progress, write the report.

The controller decides; this module only waits between ticks, retries a
backend that is briefly unreachable, prints what changed, and writes the
report at the end. Exit codes follow the CLI: 0 promoted, 1 rolled back, 2 error.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from serving.backends.base import BackendUnavailable, NotFound
from serving.rollout.controller import RolloutController, StepOutcome
from serving.rollout.report import write_report

log = logging.getLogger(__name__)

EXIT_PROMOTED, EXIT_ROLLED_BACK, EXIT_ERROR = 0, 1, 2


@dataclass(frozen=True)
class RolloutResult:
    """How a rollout ended."""

    outcome: str  # "promoted" | "rolled_back" | "error"
    reason: str
    report: dict[str, Any] = field(default_factory=dict)
    report_paths: dict[str, Path] = field(default_factory=dict)
    ticks: int = 0

    @property
    def exit_code(self) -> int:
        return {"promoted": EXIT_PROMOTED, "rolled_back": EXIT_ROLLED_BACK}.get(self.outcome, EXIT_ERROR)


def run_rollout(
    controller: RolloutController,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    report_dir: str | Path | None = None,
    max_duration_s: float | None = None,
    max_unavailable: int = 10,
    on_outcome: Callable[[StepOutcome], None] | None = None,
    min_sleep_s: float = 0.05,
) -> RolloutResult:
    """Call ``controller.step(clock())`` until the rollout ends.

    Args:
        controller: the configured controller.
        clock: unix seconds.
        sleep: waits between ticks (the only sleep in the rollout).
        report_dir: write ``rollout.json``/``.md``/``.png`` there at the end.
        max_duration_s: give up (outcome ``error``) after this long; the
            rollout state stays on the service and a rerun resumes it.
        max_unavailable: consecutive unreachable-backend ticks before giving up.
        on_outcome: called with every tick's outcome (progress display).
        min_sleep_s: lower bound of one wait.

    Raises:
        RolloutRefused, RolloutSpecError: before anything was changed.
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (a cancelled CI job, a deleted pod) stops the rollout like Ctrl-C does, so the lease is released
        previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return _drive(controller, clock, sleep, report_dir, max_duration_s, max_unavailable, on_outcome, min_sleep_s)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: a rerun by anyone resumes at once instead of waiting out the lease
        controller.release_lease(clock())
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _drive(controller, clock, sleep, report_dir, max_duration_s, max_unavailable, on_outcome, min_sleep_s) -> RolloutResult:
    started = clock()
    ticks, unavailable, last_key = 0, 0, None
    while True:
        now = clock()
        if max_duration_s is not None and now - started > max_duration_s:
            released = controller.release_lease(now)
            reason = (f"gave up after {max_duration_s:.0f}s; the rollout state stays on the service and a rerun resumes it"
                      + (" (lease released: at once)" if released else ""))
            return _finish(controller, "error", reason, report_dir, ticks)
        try:
            out = controller.step(now)
            unavailable = 0
        except (BackendUnavailable, NotFound) as exc:
            unavailable += 1
            if unavailable >= max_unavailable:
                return _finish(controller, "error", str(exc), report_dir, ticks)
            log.warning("backend unavailable (%d/%d): %s", unavailable, max_unavailable, exc)
            sleep(min(5.0, 0.5 * unavailable))
            continue
        ticks += 1
        key = (out.phase, out.action, out.weight, out.message if out.action != "waiting" else None)
        if key != last_key:
            last_key = key
            if on_outcome is not None:
                on_outcome(out)
            log.debug("tick %d: %s %s %d%% %s", ticks, out.phase, out.action, out.weight, out.message)
        if out.done:
            return _finish(controller, out.result or "error", out.message, report_dir, ticks)
        sleep(max(min_sleep_s, out.next_check_s))


def _finish(controller: RolloutController, outcome: str, reason: str, report_dir, ticks: int) -> RolloutResult:
    try:
        report = controller.report_data()
    except Exception as exc:  # the report must never hide the outcome
        log.warning("report not built: %s", exc)
        report = {}
    if outcome == "error":
        report = dict(report, outcome="error", error=reason)
    paths: dict[str, Path] = {}
    if report_dir is not None and report:
        try:
            paths = write_report(report, report_dir)
        except OSError as exc:
            log.warning("report not written to %s: %s", report_dir, exc)
    return RolloutResult(outcome=outcome, reason=reason, report=report, report_paths=paths, ticks=ticks)


def print_progress(console: Any = None) -> Callable[[StepOutcome], None]:
    """An ``on_outcome`` that prints one line per change (rich, to stderr)."""
    from rich.console import Console
    from rich.text import Text

    console = console or Console(stderr=True, highlight=False)
    styles = {"promoted": "green", "done": "bold", "rolling_back": "red", "rolled_back": "red", "advanced": "cyan"}

    def show(out: StepOutcome) -> None:
        line = f"{time.strftime('%H:%M:%S')} {out.phase:<11} {out.action:<15} canary {out.weight:>3}%  {out.message}"
        console.print(Text(line, style=styles.get(out.action, "")))

    return show
