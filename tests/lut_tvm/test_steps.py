"""Long steps are never silent: ``lut_tvm.steps.Progress`` (the one progress display) ticks on a
terminal and prints one line per step when piped; stage lines (the CLI's ``lut-tvm CMD: ...``) go
through it too; ``lut-tvm demo`` announces its steps from the start."""

from __future__ import annotations

import argparse
import io
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from lut_tvm import steps
from lut_tvm.cli.common import progress_printer
from lut_tvm.steps import Progress

ROOT = Path(__file__).resolve().parents[3]


class Terminal(io.StringIO):
    """A text stream that says it is a terminal (tqdm then draws and redraws its line)."""

    def isatty(self) -> bool:
        return True


def test_piped_steps_print_one_line_each():
    out = io.StringIO()
    progress = Progress(file=out)
    with progress.step("importing the model"):
        pass
    with progress.counter("tuning", 4, "trial") as count:
        count.status("task a: searching")
        count.update(3)
    lines = out.getvalue().splitlines()
    assert lines[0] == "importing the model ..."
    assert lines[1] == "tuning (4 trials) ..."
    assert lines[2].startswith("tuning: 3/4 trials (done in ")
    assert len(lines) == 3 and "\r" not in out.getvalue()


def test_piped_counter_reports_while_it_runs(monkeypatch):
    monkeypatch.setattr(steps, "PIPED_INTERVAL", 0.2)
    out = io.StringIO()
    with Progress(file=out).counter("tuning", 10, "trial") as count:
        for step in range(3):
            count.status(f"task {step}")
            count.update(1)
            time.sleep(0.5)
        middle = out.getvalue().splitlines()
    assert any(line.startswith("tuning: 1/10 trials (task 0)") for line in middle), middle
    assert any(line.startswith("tuning: 2/10 trials (task 1)") for line in middle), middle


def test_terminal_step_ticks_while_the_step_blocks():
    out = Terminal()
    with Progress(file=out).step("compiling"):
        time.sleep(1.6)  # one blocking call: the line must still be redrawn as time passes
    text = out.getvalue()
    assert text.count("\r") >= 3, repr(text)
    assert "compiling: 00:01" in text
    assert "compiling: done in 1." in text


def test_disabled_progress_prints_nothing():
    out = Terminal()
    progress = Progress(enabled=False, file=out)
    with progress.step("a"), progress.counter("b", 2) as count:
        count.update(2)
    assert out.getvalue() == ""


def test_stage_lines_carry_the_prefix_when_piped():
    out = io.StringIO()
    progress = Progress(file=out, prefix="lut-tvm compile: ")
    progress.say("importing cnn.onnx")
    with progress.step("building"):
        pass
    assert out.getvalue().splitlines() == ["lut-tvm compile: importing cnn.onnx", "lut-tvm compile: building ..."]
    silent = io.StringIO()
    Progress(enabled=False, file=silent).say("nothing")
    assert silent.getvalue() == ""


def test_a_line_said_during_a_bar_stays_whole_on_a_terminal():
    out = Terminal()
    progress = Progress(file=out)
    with progress.counter("cases", 3, "case") as count:
        count.update()
        progress.say("case-b: could not be prepared, left out")
        count.update(2)
    text = out.getvalue()
    said = text.index("case-b: could not be prepared, left out\n")
    assert "3/3" in text[said:]  # the bar is drawn again below the line
    # the line starts a row of its own: the bar was cleared before it ("\r" then spaces or "\x1b[K")
    assert text[:said].rstrip(" ").endswith(("\r", "\x1b[K", "\n")), repr(text[:said][-40:])


def test_progress_printer_prints_through_the_display(capsys):
    assert progress_printer(argparse.Namespace(command="plan", quiet=True)) is None
    say = progress_printer(argparse.Namespace(command="plan", quiet=False))
    say("k-means, K = 16, on 2 layer(s)")
    assert capsys.readouterr().err == "lut-tvm plan: k-means, K = 16, on 2 layer(s)\n"


def test_log_records_go_above_the_bars_on_a_terminal_only():
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    root.addHandler(handler)
    try:
        with Progress(file=Terminal()).logs_above_bars():
            inside = list(root.handlers)
        with Progress(file=io.StringIO()).logs_above_bars():
            piped = list(root.handlers)
    finally:
        root.removeHandler(handler)
    assert handler not in inside and any("tqdm" in type(h).__name__.lower() for h in inside), inside
    assert handler in piped


def test_demo_announces_its_steps_from_the_start(tmp_path):
    """The first steps of ``lut-tvm demo`` (imports, data, training) each print a line at once;
    the run is stopped once they did."""
    wanted = ["loading TVM, PyTorch and scikit-learn ...", "loading scikit-learn's digits ...",
              "training the digits CNN (15 epochs) ..."]
    proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-m", "lut_tvm.cli", "demo", "--out-dir", str(tmp_path / "out")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    seen = []
    watchdog = threading.Timer(600, proc.kill)  # the whole demo would be over long before
    watchdog.start()
    try:
        for line in proc.stderr:
            seen.append(line.rstrip("\n"))
            if seen[-1] == wanted[-1]:
                break
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()
    assert [line for line in seen if line in wanted] == wanted, seen
