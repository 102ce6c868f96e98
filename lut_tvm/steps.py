"""The one progress display of lut_tvm, its CLI, benchmarks and scripts (no TVM import): tqdm on a
terminal (a step's line ticks with the time elapsed, a counter is a bar), plain lines when the
output is piped or logged (one per step or stage, a counter's count every ``PIPED_INTERVAL`` s)."""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager

# A piped counter prints its state at most this often (seconds).
PIPED_INTERVAL = 15.0
# A terminal line is redrawn this often (seconds), so the elapsed time ticks during long calls.
TICK = 0.5


class _Ticker:
    """A daemon thread calling ``fn`` every ``interval`` seconds until stopped."""

    def __init__(self, fn, interval: float):
        self._done = threading.Event()
        self._fn = fn
        self._interval = interval
        self._thread = threading.Thread(target=self._run, name="lut_tvm-progress", daemon=True)
        self._thread.start()

    def _run(self):
        while not self._done.wait(self._interval):
            try:
                self._fn()
            except Exception:  # pylint: disable=broad-except  (a display must never break a run)
                return

    def stop(self):
        self._done.set()
        self._thread.join(timeout=2 * self._interval + 1)


class Counter:
    """A running count (``update``) with a status text (``status``), drawn by ``Progress``."""

    def __init__(self, text: str, total: int | None, unit: str, bar=None, file=None):
        self.text, self.total, self.unit = text, total, unit
        self.count = 0
        self.bar = bar
        self.file = file
        self._status = ""
        self._printed = ("", -1)
        self._lock = threading.Lock()

    def update(self, n: int = 1) -> None:
        with self._lock:
            self.count += n
            if self.bar is not None:
                self.bar.update(n)

    def status(self, text: str) -> None:
        """What the step is doing now (shown after the count)."""
        with self._lock:
            self._status = text
            if self.bar is not None:
                self.bar.set_postfix_str(text[:48], refresh=False)

    def line(self) -> str:
        total = f"/{self.total}" if self.total else ""
        status = f" ({self._status})" if self._status else ""
        return f"{self.text}: {self.count}{total} {self.unit}s{status}"

    def print_if_changed(self) -> None:
        """Piped output: one line with the count, when it changed since the last one."""
        with self._lock:
            state = (self._status, self.count)
            if state != self._printed:
                self._printed = state
                print(self.line(), file=self.file, flush=True)


class Progress:
    """Steps, counters and stage lines on ``file`` (stderr): tqdm on a terminal, plain lines when
    piped, nothing when ``enabled`` is False. ``prefix`` starts every line (``"lut-tvm compile: "``)."""

    def __init__(self, enabled: bool = True, file=None, prefix: str = ""):
        self.file = file or sys.stderr
        self.enabled = enabled
        self.prefix = prefix
        self.tty = bool(enabled and getattr(self.file, "isatty", lambda: False)())

    def say(self, line: str) -> None:
        """One line now, e.g. a stage starting (the ``progress`` hook of ``compile`` and
        ``build_kmeans_plan``) or a case left out: above any bar on a terminal."""
        if not self.enabled:
            return
        if self.tty:
            from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel

            tqdm.write(self.prefix + line, file=self.file)
        else:
            print(self.prefix + line, file=self.file, flush=True)

    @contextmanager
    def logs_above_bars(self):
        """While inside, log records print above a terminal's bars instead of through them."""
        if not self.tty:
            yield
            return
        from tqdm.contrib.logging import logging_redirect_tqdm  # pylint: disable=import-outside-toplevel

        with logging_redirect_tqdm():
            yield

    @contextmanager
    def step(self, text: str):
        """``with progress.step("compiling the model"):`` -- the step's line, ticking on a terminal."""
        if not self.enabled:
            yield
            return
        start = time.perf_counter()
        text = self.prefix + text
        if not self.tty:
            print(f"{text} ...", file=self.file, flush=True)
            yield
            return
        from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel

        bar = tqdm(total=None, desc=text, bar_format="{desc}: {elapsed}", file=self.file)
        ticker = _Ticker(bar.refresh, TICK)
        try:
            yield
        finally:
            ticker.stop()
            bar.bar_format = "{desc}"
            bar.set_description_str(f"{text}: done in {time.perf_counter() - start:.1f} s",
                                    refresh=False)
            bar.close()

    @contextmanager
    def counter(self, text: str, total: int | None = None, unit: str = "item"):
        """``with progress.counter("tuning", 320, "trial") as count: count.update(16)``: a tqdm bar
        on a terminal; piped, a line at the start and the count every ``PIPED_INTERVAL`` s."""
        if not self.enabled:
            yield Counter(text, total, unit)
            return
        start = time.perf_counter()
        text = self.prefix + text
        if not self.tty:
            count = Counter(text, total, unit, file=self.file)
            print(f"{text} ({total} {unit}s) ..." if total else f"{text} ...", file=self.file,
                  flush=True)
            count._printed = ("", 0)  # pylint: disable=protected-access
            ticker = _Ticker(count.print_if_changed, PIPED_INTERVAL)
            try:
                yield count
            finally:
                ticker.stop()
                count.status(f"done in {time.perf_counter() - start:.1f} s")
                count.print_if_changed()
            return
        from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel

        bar = tqdm(total=total, desc=text, unit=unit, file=self.file)
        count = Counter(text, total, unit, bar=bar)
        ticker = _Ticker(bar.refresh, TICK)
        try:
            yield count
        finally:
            ticker.stop()
            bar.close()
