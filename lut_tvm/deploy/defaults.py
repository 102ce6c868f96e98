"""Defaults and the error class of the deploy package (no TVM import: the CLI and the emulated
device's start/stop read them without loading TVM)."""

from ..errors import LutTvmError

DEFAULT_HOST = "127.0.0.1"  # bind and connect on loopback unless told otherwise
DEFAULT_PORT = 9090
DEFAULT_CONNECT_TIMEOUT = 30.0
DEFAULT_RUN_TIMEOUT = 300.0

EMULATED_NOTE = "EMULATED under qemu: not device performance"


class DeviceError(LutTvmError):
    """A remote device could not be reached, or failed or timed out during a step."""
