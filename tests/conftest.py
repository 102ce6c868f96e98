"""Make the repository root importable (``lut_tvm``, ``schedules``, ``relay_passes``), and end the
run with one line when the emulated ARM64 device's tests were skipped, saying how to enable them."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

ENABLE_ARM64 = ("provision the device as root (it needs apt-get): `sudo .venv/bin/lut-tvm device provision`; "
                "`make test` does it when run as root")


def pytest_unconfigure(config):
    """After the run's last line: one line if tests were skipped for want of the emulated ARM64 device."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if not skipped:
        return
    from lut_tvm.testing import ARM64_SKIP_PREFIX  # pylint: disable=import-outside-toplevel

    reasons = []
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        if reason.startswith(ARM64_SKIP_PREFIX):
            reasons.append(reason.removeprefix(ARM64_SKIP_PREFIX))
    if reasons:
        reporter.write_line(
            f"{len(reasons)} ARM64 deploy tests skipped ({reasons[0]}); to run them, {ENABLE_ARM64}",
            yellow=True)
