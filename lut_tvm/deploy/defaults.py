"""Defaults and the error class of the deploy package (no TVM import: the CLI and the emulated
device's start/stop read them without loading TVM)."""

from ..errors import LutTvmError

DEFAULT_HOST = "127.0.0.1"  # bind and connect on loopback unless told otherwise
DEFAULT_PORT = 9090
DEFAULT_CONNECT_TIMEOUT = 30.0
DEFAULT_RUN_TIMEOUT = 300.0
DEFAULT_MEASURE_TIMEOUT = 60.0  # each step of one tuning measurement (upload, load, time)
DEFAULT_TRACKER_PORT = 9190  # TVM's usual tracker port (the first free of 9190-9199 is taken)
DEFAULT_EMULATED_KEY = "arm64-emulated"  # the key the emulated device registers with its tracker

EMULATED_NOTE = "EMULATED under qemu: not device performance"


class DeviceError(LutTvmError):
    """A remote device could not be reached, or failed or timed out during a step."""
