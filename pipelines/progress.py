"""What ``llmops run`` shows while the release runs: one row per stage, live.

kfp.local runs the steps one after the other in subprocesses and reports them
only as log text: its own records (``Executing task 'x'``, ``Task 'x' finished
with status SUCCESS``, ``Task x cache hit``) and each step's output, printed
line by line to ``sys.stdout`` (``kfp/local/subprocess_task_handler.py``,
``run_local_subprocess``). :class:`LineTap` stands in for ``sys.stdout``
during the run: every line goes to the log file, and :class:`StageParser` turns
the lines into :class:`StageEvent` s — kfp.local's lines for the state, the
steps' own progress lines for the live figure (fine-tune step and loss, canary
weight and verdict). When a step ends, its outputs (``executor_output.json``
and its artifacts, or the cache entry of a cache hit) give the final figure.

Two views draw the same :class:`StageBoard`: :class:`LiveView` (rich, on a
terminal) and :class:`PlainView` (one plain line per event, for CI and pipes).
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any, TextIO

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def strip_control(text: str) -> str:
    """``text`` without ANSI escapes and control characters (tabs kept)."""
    return _CONTROL.sub("", _ANSI.sub("", text))


class StageState(str, Enum):
    """Where one stage of the release stands."""

    WAITING = "waiting"
    RUNNING = "running"
    CACHED = "cached"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def finished(self) -> bool:
        return self in (StageState.CACHED, StageState.DONE, StageState.FAILED, StageState.SKIPPED)


@dataclass(frozen=True)
class StageSpec:
    """One stage of the ``llm-release`` pipeline as kfp.local names it."""

    task: str  # kfp.local's task name (the component function's name, dashed)
    label: str  # what a person reads


# In pipeline order; kfp.local task names come from the component functions in pipelines/llm_release.py.
STAGES: tuple[StageSpec, ...] = (
    StageSpec("prepare-dataset", "dataset"),
    StageSpec("import-model", "import"),
    StageSpec("finetune", "fine-tune"),
    StageSpec("champion-metrics", "champion"),
    StageSpec("evaluate", "evaluate"),
    StageSpec("register", "register"),
    StageSpec("build-image-op", "image"),
    StageSpec("rollout", "canary"),
)
GATE_FAILED_TASK = "gate-failed"


@dataclass(frozen=True)
class StageEvent:
    """A change of one stage: a new state, a new figure, or both."""

    task: str  # kfp.local task name
    state: StageState | None = None  # None: the figure changed, the state did not
    figure: str | None = None  # the key figure, one short line
    at: float = field(default_factory=time.time)


@dataclass
class StageRow:
    """The board's view of one stage."""

    spec: StageSpec
    state: StageState = StageState.WAITING
    started: float | None = None
    ended: float | None = None
    figure: str = ""

    def elapsed(self, now: float | None = None) -> float | None:
        if self.started is None:
            return None
        return (self.ended if self.ended is not None else (now or time.time())) - self.started


class StageBoard:
    """The stages of one release and their latest state; views subscribe to changes."""

    def __init__(self, stages: Iterable[StageSpec] = STAGES) -> None:
        self.rows: dict[str, StageRow] = {s.task: StageRow(s) for s in stages}
        self._listeners: list[Callable[[StageRow, StageEvent], None]] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Callable[[StageRow, StageEvent], None]) -> None:
        self._listeners.append(listener)

    def apply(self, event: StageEvent) -> None:
        """Record ``event``; events of tasks that are not stages are ignored."""
        with self._lock:
            row = self.rows.get(event.task)
            if row is None:
                return
            changed = False
            if event.state is not None and event.state != row.state:
                if event.state == StageState.RUNNING:
                    row.started, row.ended = event.at, None
                elif event.state.finished:
                    row.started = row.started if row.started is not None else event.at
                    row.ended = event.at
                row.state = event.state
                changed = True
            if event.figure is not None and event.figure != row.figure:
                row.figure = event.figure
                changed = True
            if not changed:
                return
            snapshot = replace(row)
        for listener in self._listeners:
            listener(snapshot, event)

    def finish(self, at: float | None = None) -> None:
        """The run ended: stages that never started were skipped; a stage still running failed."""
        at = at or time.time()
        for row in list(self.rows.values()):
            if row.state == StageState.WAITING:
                self.apply(StageEvent(row.spec.task, StageState.SKIPPED, at=at))
            elif row.state == StageState.RUNNING:
                self.apply(StageEvent(row.spec.task, StageState.FAILED, at=at))

    def times(self) -> dict[str, float]:
        """Seconds per stage that ran or came from the cache (cache hits count 0)."""
        out = {}
        for row in self.rows.values():
            if row.state in (StageState.DONE, StageState.FAILED):
                out[row.spec.label] = round(row.elapsed() or 0.0, 1)
            elif row.state == StageState.CACHED:
                out[row.spec.label] = 0.0
        return out


# ------------------------------------------------------------------ figures from the steps' outputs


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class TaskOutputs:
    """The outputs of one finished task: from its folder in the run, or from the kfp.local cache entry."""

    def __init__(self, params: dict[str, Any], artifacts: dict[str, Path]) -> None:
        self.params = params
        self.artifacts = artifacts

    @classmethod
    def from_task_dir(cls, task_dir: Path) -> "TaskOutputs":
        data = _read_json(task_dir / "executor_output.json") or {}
        params = dict(data.get("parameterValues") or {})
        artifacts = {p.name: p for p in task_dir.iterdir()} if task_dir.is_dir() else {}
        for name, entry in (data.get("artifacts") or {}).items():
            items = entry.get("artifacts") or []
            if items and items[0].get("uri"):
                artifacts[name] = Path(items[0]["uri"])
        artifacts.pop("executor_output.json", None)
        return cls(params, artifacts)

    @classmethod
    def from_cache_entry(cls, entry: Path) -> "TaskOutputs":
        data = _read_json(entry) or {}
        params, artifacts = {}, {}
        for name, value in data.items():
            if isinstance(value, dict) and value.get("__kfp_artifact__"):
                artifacts[name] = Path(value.get("uri", ""))
            else:
                params[name] = value
        return cls(params, artifacts)

    def metrics(self, name: str = "metrics") -> dict[str, Any]:
        path = self.artifacts.get(name)
        data = _read_json(path) if path is not None and path.is_file() else None
        return data if isinstance(data, dict) else {}


def _short_digest(ref: str) -> str:
    m = re.search(r"sha256:([0-9a-f]{12})", ref)
    return f"sha256:{m.group(1)}" if m else ref


def final_figure(task: str, out: TaskOutputs, live: str = "", champion: dict[str, Any] | None = None) -> str:
    """The key figure of a finished stage, from its outputs.

    Args:
        task: kfp.local task name.
        out: its outputs.
        live: the last figure its log lines gave.
        champion: the champion's metrics (the champion step's output), for the evaluation's comparison.
    """
    p = out.params
    if task == "import-model":
        model = out.artifacts.get("model")
        manifest = _read_json(model / "llmops_manifest.json") if model is not None else None
        if isinstance(manifest, dict) and manifest.get("source"):
            n = manifest.get("parameter_count")
            arch = manifest.get("architecture") or ""
            return " · ".join(str(x) for x in (manifest["source"], arch, f"{n / 1e6:.1f}M parameters" if n else "") if x)
        return live
    if task == "prepare-dataset":
        counts = []
        for name in ("train", "eval_data"):
            path = out.artifacts.get(name)
            if path is not None and path.is_file():
                with path.open("rb") as fh:
                    counts.append(f"{sum(1 for line in fh if line.strip())} {name.split('_')[0]}")
        sha = str(p.get("Output") or "")
        return " · ".join(counts + ([f"sha256 {sha[:12]}"] if sha else []))
    if task == "finetune":
        m = out.metrics()
        if not m or not m.get("steps"):
            return live or "skipped: the base model is the candidate"
        return f"{m['steps']:.0f} steps · loss {m['final_loss']:.3f} · {m.get('wall_s', 0):.0f}s"
    if task == "champion-metrics":
        text = p.get("Output") or ""
        champ = _read_champion(text)
        if not champ:
            return "none: first release"
        em = champ.get("exact_match")
        return f"v{champ.get('version', '?')}" + (f" · exact match {em:.1f}%" if isinstance(em, (int, float)) else "")
    if task == "evaluate":
        m = out.metrics()
        em = m.get("exact_match")
        verdict = "gate passed" if p.get("Output") in (True, "true", "True") or m.get("gate_passed") == 1.0 else "gate FAILED"
        ref = (champion or {}).get("exact_match")
        vs = f" vs champion {ref:.1f}%" if isinstance(ref, (int, float)) else " (no champion yet)"
        return (f"exact match {em:.1f}%{vs} · " if isinstance(em, (int, float)) else "") + verdict
    if task == "register":
        return f"version {p.get('Output')}" if p.get("Output") else live
    if task == "build-image-op":
        ref = str(p.get("Output") or "")
        size = re.search(r"packaged ([\d.]+ [KMG]B)", live)
        return _short_digest(ref) + (f" · {size.group(1)}" if size else "") if ref else live
    if task == "rollout":
        outcome = str(p.get("Output") or "")
        return f"{outcome} · {live}" if outcome and live else outcome or live
    return live


def _read_champion(text: str) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# ------------------------------------------------------------------ parsing the log lines


_TASK = r"'?([\w-]+)'?"
_EXECUTING = re.compile(rf"Executing task {_TASK}")
_FINISHED = re.compile(rf"Task {_TASK} finished with status (\w+)")
_CACHE_HIT = re.compile(rf"Task {_TASK} cache hit \(key=([0-9a-f]+)\)")

# Progress lines the steps log today (components/finetune/trainer.py, components/import_model,
# components/build_image/build.py, serving/rollout/controller.py). tests/e2e checks they still match.
_LIVE: dict[str, tuple[tuple[re.Pattern[str], Callable[[re.Match[str], dict[str, str]], str]], ...]] = {
    "import-model": (
        (re.compile(r"imported (\S+): (\w+), (\d+) parameters"),
         lambda m, s: f"{m.group(1)} · {m.group(2)} · {int(m.group(3)) / 1e6:.1f}M parameters"),
    ),
    "finetune": (
        (re.compile(r"step (\d+)/(\d+) loss ([\d.]+)"), lambda m, s: f"step {m.group(1)}/{m.group(2)} · loss {float(m.group(3)):.3f}"),
        (re.compile(r"fine-tune skipped"), lambda m, s: "skipped: the base model is the candidate"),
    ),
    "evaluate": (
        (re.compile(r"exact match ([\d.]+)%, perplexity ([\d.]+)"), lambda m, s: f"exact match {m.group(1)}%"),
    ),
    "build-image-op": (
        (re.compile(r"packaged ([\d.]+ [KMG]B)"), lambda m, s: f"packaged {m.group(1)}"),
    ),
    "rollout": (
        (re.compile(r"created with v(\S+) \(first deployment\)"), lambda m, s: f"first deployment of v{m.group(1)}"),
        (re.compile(r"rollout \S+ started: v\S+ -> v\S+, (\d+)% to the canary"),
         lambda m, s: _canary(s, weight=m.group(1))),
        (re.compile(r"interval at (\d+)%: (\w+)"), lambda m, s: _canary(s, weight=m.group(1), verdict=m.group(2))),
        (re.compile(r"passed step \d+, canary now at (\d+)%"), lambda m, s: _canary(s, weight=m.group(1))),
        (re.compile(r"rolling back v\S+: (.*)"), lambda m, s: _canary(s, verdict="rolling back")),
    ),
}


def _canary(state: dict[str, str], weight: str | None = None, verdict: str | None = None) -> str:
    if weight is not None:
        state["weight"] = weight
    if verdict is not None:
        state["verdict"] = verdict
    steps = state.get("steps", "")
    where = f"step {steps.split(',').index(state['weight']) + 1}/{len(steps.split(','))} · " if state.get("weight") in steps.split(",") else ""
    text = f"{where}{state.get('weight', '?')}% traffic"
    return text + (f" · last verdict {state['verdict']}" if state.get("verdict") else "")


class StageParser:
    """Turns kfp.local's log lines (and the steps' streamed lines) into stage events.

    Args:
        board: where the events go.
        outputs: finds a finished task's outputs (``task -> TaskOutputs | None``).
        cache_entry: finds a cache entry by its key's prefix (``key -> TaskOutputs | None``).
        traffic_steps: the canary steps, to show "step 2/4".
    """

    def __init__(
        self,
        board: StageBoard,
        outputs: Callable[[str], TaskOutputs | None],
        cache_entry: Callable[[str], TaskOutputs | None],
        traffic_steps: str = "",
    ) -> None:
        self.board = board
        self._outputs = outputs
        self._cache_entry = cache_entry
        self._current: str | None = None
        self._live: dict[str, str] = {}
        self._canary: dict[str, str] = {"steps": traffic_steps.replace(" ", "")}
        self._champion: dict[str, Any] | None = None

    def feed(self, line: str) -> None:
        text = strip_control(line)
        try:
            self._feed(text)
        except Exception:  # a view must never break the release it shows
            logging.getLogger(__name__).debug("progress line not understood: %r", text, exc_info=True)

    def _feed(self, text: str) -> None:
        if m := _EXECUTING.search(text):
            task = m.group(1)
            self._current = task
            self.board.apply(StageEvent(task, StageState.RUNNING, figure=""))
            if task == GATE_FAILED_TASK:
                self.board.apply(StageEvent("evaluate", figure=self._figure_of("evaluate")))
            return
        if m := _FINISHED.search(text):
            task, status = m.group(1), m.group(2)
            self._current = None
            if task == GATE_FAILED_TASK:
                return
            outputs = self._outputs(task)
            live = self._live.get(task, "")
            if task == "champion-metrics" and outputs is not None:
                self._champion = _read_champion(str(outputs.params.get("Output") or ""))
            figure = final_figure(task, outputs, live, self._champion) if outputs is not None else live
            if status != "SUCCESS" or (task == "rollout" and outputs is not None and outputs.params.get("Output") == "error"):
                state = StageState.FAILED  # a rollout in error succeeds as a step (its report is an output), not as a stage
            else:
                state = StageState.SKIPPED if task == "finetune" and "skipped" in figure else StageState.DONE
            self.board.apply(StageEvent(task, state, figure=figure))
            return
        if m := _CACHE_HIT.search(text):
            task = m.group(1)
            outputs = self._cache_entry(m.group(2))
            figure = final_figure(task, outputs) if outputs is not None else "from cache"
            self.board.apply(StageEvent(task, StageState.CACHED, figure=figure))
            return
        task = self._current
        for pattern, render in _LIVE.get(task or "", ()):
            if m := pattern.search(text):
                figure = render(m, self._canary)
                self._live[task] = figure if task != "build-image-op" else self._live.get(task, "") + " " + figure
                self.board.apply(StageEvent(task, figure=figure))
                return

    def _figure_of(self, task: str) -> str:
        return self.board.rows[task].figure if task in self.board.rows else ""


class LineTap(io.TextIOBase):
    """A text stream that splits what is written into lines: each goes to the log, the parser and maybe a mirror."""

    def __init__(self, log: TextIO, on_line: Callable[[str], None], mirror: TextIO | None = None) -> None:
        super().__init__()
        self._log = log
        self._on_line = on_line
        self._mirror = mirror
        self._buffer = ""
        self._lock = threading.RLock()

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        with self._lock:
            self._log.write(s)
            if self._mirror is not None:
                self._mirror.write(s)
            self._buffer += s
            if "\n" in s:
                self._log.flush()  # so `tail -f` on the log follows the run
            while "\n" in self._buffer:
                line, self._buffer = self._buffer.split("\n", 1)
                self._on_line(line)
        return len(s)

    def flush(self) -> None:
        with self._lock:
            self._log.flush()
            if self._mirror is not None:
                self._mirror.flush()

    def isatty(self) -> bool:
        return False


# ------------------------------------------------------------------ views


def _fmt_elapsed(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


class PlainView:
    """One plain line per stage event (no colours, no control characters): CI logs and pipes."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, row: StageRow, event: StageEvent) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(event.at))
        parts = [stamp, f"{row.spec.label:<9}", f"{row.state.value:<7}"]
        if row.state.finished and row.state != StageState.SKIPPED or row.ended is not None:
            parts.append(f"{_fmt_elapsed(row.elapsed()):>7}")
        if row.figure:
            parts.append(row.figure)
        self.out.write(strip_control("  ".join(parts)) + "\n")
        self.out.flush()


_STYLE = {
    StageState.WAITING: ("·", "dim"),
    StageState.RUNNING: ("▶", "bold cyan"),
    StageState.CACHED: ("≡", "blue"),
    StageState.DONE: ("✓", "green"),
    StageState.FAILED: ("✗", "bold red"),
    StageState.SKIPPED: ("–", "dim"),
}


class LiveView:
    """A rich table redrawn in place: one row per stage with its state, elapsed time and key figure."""

    def __init__(self, board: StageBoard, console: Any, title: str = "llm-release", footer: str = "") -> None:
        from rich.live import Live

        self.board = board
        self.console = console
        self.title = title
        self.footer = footer
        self._live = Live(self, console=console, refresh_per_second=4, transient=False, redirect_stdout=False,
                          redirect_stderr=False)

    def __rich__(self):
        from rich.table import Table
        from rich.text import Text

        now = time.time()
        table = Table(title=self.title, title_justify="left", expand=False, box=None, padding=(0, 1),
                      caption=self.footer or None, caption_justify="left")
        table.add_column("", width=1)
        table.add_column("stage", style="bold")
        table.add_column("state")
        table.add_column("time", justify="right")
        table.add_column("key figure")
        for row in self.board.rows.values():
            mark, style = _STYLE[row.state]
            table.add_row(Text(mark, style=style), row.spec.label, Text(row.state.value, style=style),
                          _fmt_elapsed(row.elapsed(now)), Text(row.figure, overflow="ellipsis", no_wrap=True))
        return table

    def __call__(self, row: StageRow, event: StageEvent) -> None:
        self._live.refresh()

    def __enter__(self) -> "LiveView":
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.refresh()
        self._live.stop()


# ------------------------------------------------------------------ one long command outside `llmops run`

_STEP_OF = re.compile(r"\bstep (\d+)/(\d+)\b")


class _StatusHandler(logging.Handler):
    """Feeds log records to a status line: INFO becomes its text, WARNING and above are printed above it."""

    def __init__(self, update: Callable[[str, tuple[int, int] | None], None], console: Any) -> None:
        super().__init__(logging.INFO)
        self._update = update
        self._console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = strip_control(record.getMessage()).splitlines()[0] if record.getMessage() else ""
        except Exception:  # a status line never breaks the command it shows
            return
        if record.levelno >= logging.WARNING:
            self._console.print(f"{record.levelname.lower()}: {msg}", markup=False, highlight=False)
            return
        m = _STEP_OF.search(msg)
        self._update(msg, (int(m.group(1)), int(m.group(2))) if m else None)


class status_line:
    """A status line for one long command (fine-tune, build-image, rollout, promote) while it runs.

    On a terminal: a spinner (or a bar once a ``step N/M`` line is logged) with the elapsed time and the
    latest log message, redrawn in place; warnings print above it. Elsewhere (CI, pipes) nothing changes:
    the command's log lines stay plain lines, one per event.

    Args:
        title: what runs, e.g. ``"fine-tune"``.
        out: the terminal (default ``sys.stderr``, where the CLI logs).
    """

    def __init__(self, title: str, out: TextIO | None = None) -> None:
        import sys

        self.title = title
        self.out = out if out is not None else sys.stderr
        self._progress: Any = None
        self._saved: list[logging.Handler] = []
        self._level = logging.NOTSET

    @property
    def active(self) -> bool:
        return self._progress is not None

    def __enter__(self) -> "status_line":
        if not self.out.isatty():
            return self
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn

        console = Console(file=self.out)
        self._progress = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.fields[title]}"), BarColumn(), TaskProgressColumn(),
            TimeElapsedColumn(), TextColumn("{task.description}"), console=console, transient=False,
        )
        task = self._progress.add_task("starting", total=None, title=self.title)

        def update(msg: str, step: tuple[int, int] | None) -> None:
            width = max(20, console.width - 60)
            text = msg if len(msg) <= width else msg[: width - 1] + "…"
            if step is not None:
                self._progress.update(task, completed=step[0], total=step[1], description=text)
            else:
                self._progress.update(task, description=text)

        root = logging.getLogger()
        self._saved, self._level = root.handlers[:], root.level
        root.handlers[:] = [_StatusHandler(update, console)]
        root.setLevel(min(root.level or logging.INFO, logging.INFO))
        self._progress.start()
        self._task = task
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self._progress is None:
            return
        task = self._progress.tasks[0]
        if exc_type is None and task.total is not None:
            self._progress.update(self._task, completed=task.total)
        self._progress.stop()
        root = logging.getLogger()
        root.handlers[:] = self._saved
        root.setLevel(self._level)
        self._progress = None
