"""The stage view of ``llmops run``: kfp.local's log lines in, one row per stage out.

The lines are made with kfp.local's own formatting helpers (``kfp/local/logging_utils.py``), so a change in
how kfp.local writes them fails here; the steps' own progress lines are checked against the real steps in
tests/e2e/test_llmops_run.py.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from kfp.local import logging_utils, status

from pipelines.progress import (
    LineTap,
    LiveView,
    PlainView,
    StageBoard,
    StageParser,
    StageState,
    TaskOutputs,
    status_line,
)

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _executing(task: str) -> str:
    return f"13:08:05.986 - INFO - Executing task {logging_utils.format_task_name(task)}"


def _finished(task: str, ok: bool = True) -> str:
    st = logging_utils.format_status(status.Status.SUCCESS if ok else status.Status.FAILURE)
    return f"13:08:08.848 - INFO - Task {logging_utils.format_task_name(task)} finished with status {st}"


def _task(run: Path, task: str, params: dict, **artifacts: object) -> None:
    d = run / task
    d.mkdir(parents=True)
    (d / "executor_output.json").write_text(json.dumps({"parameterValues": params}))
    for name, content in artifacts.items():
        (d / name).write_text(content if isinstance(content, str) else json.dumps(content))


def _parser(run: Path, board: StageBoard, cache: dict[str, TaskOutputs] | None = None) -> StageParser:
    return StageParser(
        board,
        outputs=lambda task: TaskOutputs.from_task_dir(run / task) if (run / task).is_dir() else None,
        cache_entry=lambda key: (cache or {}).get(key[:12]),
        traffic_steps="10,50,100",
    )


def _release_lines(run: Path) -> list[str]:
    _task(run, "champion-metrics", {"Output": json.dumps({"version": "3", "exact_match": 80.0})})
    _task(run, "prepare-dataset", {"Output": "ab" * 32}, train="{}\n{}\n{}\n", eval_data="{}\n")
    _task(run, "finetune", {"Output": 0.4}, metrics={"steps": 300.0, "final_loss": 0.41, "wall_s": 62.0})
    _task(run, "evaluate", {"Output": True}, metrics={"exact_match": 86.0, "gate_passed": 1.0})
    _task(run, "register", {"Output": "4"})
    _task(run, "build-image-op", {"Output": "127.0.0.1:5000/llmops/llm@sha256:" + "9f" * 32})
    _task(run, "rollout", {"Output": "promoted"})
    return [
        _executing("champion-metrics"), "    champion of 'llm': version 3", _finished("champion-metrics"),
        "13:08:09 INFO root: Task import-model cache hit (key=0123456789abcdef); skipping execution.",
        _executing("prepare-dataset"), _finished("prepare-dataset"),
        _executing("finetune"),
        "    [KFP Executor 2026-12-01 13:08:23,434 INFO]: step 25/300 loss 4.2618 lr 1.96e-03",
        "    [KFP Executor 2026-12-01 13:09:33,049 INFO]: step 300/300 loss 1.2443 lr 0.00e+00",
        _finished("finetune"),
        _executing("evaluate"), _finished("evaluate"),
        _executing("register"), _finished("register"),
        _executing("build-image-op"),
        "    [KFP Executor 2026-12-01 13:09:49,312 INFO]: packaged 13.3 MB in 1 layer(s) in 1.3s (11 MB/s)",
        _finished("build-image-op"),
        _executing("rollout"),
        "    [KFP Executor 2026-12-01 13:09:57,378 INFO]: llm: rollout r-1 started: v3 -> v4, 10% to the canary",
        "    [KFP Executor 2026-12-01 13:10:05,001 INFO]: llm: interval at 10%: Successful canary served 21 requests",
        "    [KFP Executor 2026-12-01 13:10:05,002 INFO]: llm: v4 passed step 1, canary now at 50%",
        _finished("rollout"),
    ]


def test_plain_view_prints_one_clean_line_per_stage_event_with_its_key_figure(tmp_path):
    run = tmp_path / "llm-release-1"
    board = StageBoard()
    out = io.StringIO()
    board.subscribe(PlainView(out))
    import_outputs = TaskOutputs({}, {})
    parser = _parser(run, board, cache={"0123456789ab": import_outputs})
    for line in _release_lines(run):
        parser.feed(line)
    board.finish()

    text = out.getvalue()
    assert not CONTROL.search(text.replace("\n", "")), "plain output must carry no control characters"
    lines = text.splitlines()
    assert len(lines) < 30
    rows = {r.spec.label: r for r in board.rows.values()}
    assert rows["import"].state is StageState.CACHED
    assert all(r.state in (StageState.DONE, StageState.CACHED) for r in rows.values())
    assert "v3 · exact match 80.0%" in rows["champion"].figure
    assert rows["dataset"].figure.startswith("3 train · 1 eval")
    assert any("fine-tune" in ln and "running" in ln and "step 25/300 · loss 4.262" in ln for ln in lines)
    assert rows["fine-tune"].figure == "300 steps · loss 0.410 · 62s"
    assert rows["evaluate"].figure == "exact match 86.0% vs champion 80.0% · gate passed"
    assert rows["register"].figure == "version 4"
    assert rows["image"].figure == "sha256:9f9f9f9f9f9f · 13.3 MB"
    assert any("canary" in ln and "step 1/3 · 10% traffic · last verdict Successful" in ln for ln in lines)
    assert rows["canary"].figure == "promoted · step 2/3 · 50% traffic · last verdict Successful"
    assert re.search(r"^\d\d:\d\d:\d\d  canary     done\s+\S+s  promoted", lines[-1])


def test_a_gate_failure_shows_the_verdict_and_skips_what_follows(tmp_path):
    run = tmp_path / "llm-release-2"
    _task(run, "evaluate", {"Output": False}, metrics={"exact_match": 12.0, "gate_passed": 0.0})
    _task(run, "finetune", {"Output": 0.0}, metrics={"steps": 0.0})
    board = StageBoard()
    parser = _parser(run, board)
    for line in [_executing("finetune"), "    fine-tune skipped: the base model is the candidate", _finished("finetune"),
                 _executing("evaluate"), _finished("evaluate"), _executing("gate-failed"), _finished("gate-failed", ok=False)]:
        parser.feed(line)
    board.finish()
    rows = {r.spec.label: r for r in board.rows.values()}
    assert rows["fine-tune"].state is StageState.SKIPPED
    assert rows["evaluate"].figure.endswith("gate FAILED")
    assert [rows[s].state for s in ("register", "image", "canary")] == [StageState.SKIPPED] * 3


def test_a_failed_step_is_shown_failed_and_a_line_it_cannot_read_does_not_break_the_run(tmp_path):
    board = StageBoard()
    parser = _parser(tmp_path, board)
    parser.feed(_executing("register"))
    parser.feed("    \x1b[31mTraceback (most recent call last):\x00")
    parser.feed(_finished("register", ok=False))
    assert board.rows["register"].state is StageState.FAILED


def test_line_tap_logs_everything_and_hands_over_whole_lines():
    log, seen, mirror = io.StringIO(), [], io.StringIO()
    tap = LineTap(log, seen.append, mirror=mirror)
    tap.write("first pa")
    tap.write("rt\nsecond\nthi")
    tap.write("rd\n")
    assert seen == ["first part", "second", "third"]
    assert log.getvalue() == mirror.getvalue() == "first part\nsecond\nthird\n"


def test_live_view_draws_one_row_per_stage():
    from rich.console import Console

    board = StageBoard()
    console = Console(record=True, width=120, force_terminal=True, file=io.StringIO())
    view = LiveView(board, console, title="llm-release · llm", footer="log: /x/run.log")
    board.apply(__import__("pipelines.progress", fromlist=["StageEvent"]).StageEvent(
        "finetune", StageState.RUNNING, figure="step 25/300 · loss 4.262"))
    console.print(view.__rich__())
    text = console.export_text()
    for label in ("dataset", "import", "fine-tune", "champion", "evaluate", "register", "image", "canary"):
        assert label in text
    assert "running" in text and "step 25/300 · loss 4.262" in text and "log: /x/run.log" in text


def test_status_line_leaves_plain_log_lines_alone_off_a_terminal(caplog):
    import logging

    caplog.set_level(logging.INFO)
    root = logging.getLogger()
    before = root.handlers[:]
    with status_line("build-image", out=io.StringIO()) as line:
        assert not line.active
        assert root.handlers == before
        logging.getLogger("components.build_image").info("packaged 13.3 MB")
    assert "packaged 13.3 MB" in caplog.text


def _on_a_pty(code: str, timeout: float = 60) -> str:
    """Run ``code`` with a pseudo-terminal as its stdout and stderr; return what the terminal received."""
    import os
    import subprocess
    import sys

    master, slave = os.openpty()
    env = dict(os.environ, COLUMNS="120", LINES="30", TERM="xterm-256color")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=timeout)
    os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


def test_on_a_terminal_a_long_command_draws_a_bar_that_follows_its_step_lines():
    screen = _on_a_pty(
        "import logging, time\n"
        "from pipelines.progress import status_line\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "log = logging.getLogger('components.finetune.trainer')\n"
        "with status_line('fine-tune') as line:\n"
        "    assert line.active\n"
        "    for step in (25, 50):\n"
        "        log.info('step %d/50 loss 1.5 lr 1e-3', step)\n"
        "        time.sleep(0.3)\n"
        "    log.warning('disk almost full')\n"
        "print('done')\n"
    )
    assert "\x1b[" in screen, "a terminal gets a line redrawn in place"
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    assert "fine-tune" in plain and "100%" in plain and "step 50/50 loss 1.5" in plain
    assert "warning: disk almost full" in plain and "done" in plain
    assert "INFO:components.finetune.trainer" not in plain, "INFO lines feed the bar instead of scrolling by"


def test_a_rollout_in_error_is_a_failed_canary_though_its_step_succeeded(tmp_path):
    """The rollout step succeeds on an error (its report must reach the release report); the stage is FAILED."""
    run = tmp_path / "llm-release-3"
    _task(run, "rollout", {"Output": "error"}, record={"reason": "judge could not see: 3 provider errors in a row"})
    board = StageBoard()
    parser = _parser(run, board)
    for line in [_executing("rollout"), _finished("rollout"), _executing("release-report"), _finished("release-report"),
                 _executing("rollout-failed"), _finished("rollout-failed", ok=False)]:
        parser.feed(line)
    board.finish()
    assert board.rows["rollout"].state is StageState.FAILED
    assert board.rows["rollout"].figure.startswith("error")
