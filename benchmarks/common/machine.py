"""What the timings were taken on: CPU model and flags, library versions, load, and the shuffle peak.

The shuffle peak is the physical limit of the LUT lookup on this CPU: one byte shuffle
(``vpshufb``) looks up ``lanes`` bytes (64 with AVX-512BW's zmm form, 32 with AVX2, 16 with
SSSE3) and Skylake-SP / Cascade Lake issue one per cycle (port 5 only), at the clock that
/proc/cpuinfo reports ("cpu MHz": the nominal clock under this hypervisor; turbo is not
visible, so the real peak may be higher). 64 x 1 x 2500 MHz = 160 Glookup/s per core here.
"""

from __future__ import annotations

import os
import platform

from lut_tvm.targets import host_cpu_flags

SHUFFLES_PER_CYCLE = 1  # port 5 on SKX/CLX
# Flags that decide which kernels can run, in the order they are reported.
REPORTED_FLAGS = ("ssse3", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vbmi",
                  "avx512_vnni", "avx_vnni", "amx_int8", "asimd")


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_mhz() -> float:
    """The clock /proc/cpuinfo reports ("cpu MHz")."""
    value = _cpuinfo_field("cpu MHz")
    if value is None:
        raise RuntimeError("no 'cpu MHz' in /proc/cpuinfo: cannot derive the shuffle peak")
    return float(value)


def shuffle_lanes(flags: set[str] | None = None) -> int:
    """Bytes one byte-shuffle instruction looks up on this CPU (64 / 32 / 16)."""
    flags = host_cpu_flags() if flags is None else flags
    if "avx512bw" in flags:
        return 64
    if "avx2" in flags:
        return 32
    return 16  # SSSE3 pshufb, NEON tbl


def shuffle_peak() -> dict:
    """``{"lookups_per_s", "lanes", "per_cycle", "mhz", "text"}``: the shuffle unit's peak, one core."""
    lanes, mhz = shuffle_lanes(), cpu_mhz()
    peak = lanes * SHUFFLES_PER_CYCLE * mhz * 1e6
    text = (f"{lanes} lookups/shuffle (vpshufb {'zmm' if lanes == 64 else 'ymm' if lanes == 32 else 'xmm'}) "
            f"x {SHUFFLES_PER_CYCLE}/cycle (port 5, SKX) x {mhz:.0f} MHz (/proc/cpuinfo 'cpu MHz', "
            f"nominal; turbo not visible) = {peak / 1e9:.0f} Glookup/s per core")
    return {"lookups_per_s": peak, "lanes": lanes, "per_cycle": SHUFFLES_PER_CYCLE, "mhz": mhz,
            "text": text}


def library_versions() -> dict:
    """Versions of the frameworks compared (import errors are reported, not raised)."""
    versions = {"python": platform.python_version()}
    for name in ("torch", "onnxruntime", "tvm", "onnx", "numpy"):
        try:
            versions[name] = __import__(name).__version__
        except Exception as err:  # pylint: disable=broad-except
            versions[name] = f"unavailable ({type(err).__name__})"
    return versions


def machine_info() -> dict:
    """CPU model, flags, core count, load average, kernel: the header of every speed report."""
    flags = host_cpu_flags()
    return {
        "cpu_model": _cpuinfo_field("model name") or platform.processor() or platform.machine(),
        "cpu_mhz": _cpuinfo_field("cpu MHz"),
        "flags": [f for f in REPORTED_FLAGS if f in flags],
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "loadavg": list(os.getloadavg()),
    }
