"""Friendly target names (x86-avx2, x86-avx512, arm64, android-arm64, native) and their TVM
target dicts. ``arm64`` is aarch64 Linux with NEON (boards, the emulated device, Linux on a
phone); ``android-arm64`` is the same CPU with Android's triple, linked by the NDK's clang."""

from __future__ import annotations

import json
import os

from . import _tvm_compat
from .errors import TargetError

TARGETS = {
    "x86-avx2": {"kind": "llvm", "mcpu": "haswell"},
    "x86-avx512": {"kind": "llvm", "mcpu": "skylake-avx512"},
    "arm64": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]},
    "android-arm64": {"kind": "llvm", "mtriple": "aarch64-linux-android", "mattr": ["+neon"]},
}


def host_cpu_flags() -> set[str]:
    """The host CPU's feature flags from /proc/cpuinfo (empty where unreadable)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):  # x86 / ARM
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_target_name() -> str:
    """The friendly name that fits this machine's CPU best."""
    flags = host_cpu_flags()
    if os.uname().machine in ("aarch64", "arm64"):
        return "arm64"
    if "avx512bw" in flags:
        return "x86-avx512"
    if "avx2" in flags:
        return "x86-avx2"
    raise TargetError("this CPU has neither AVX2 nor NEON; pass a TVM target dict instead")


def resolve_target(target, num_cores: int | None = None):
    """A TVM target from a friendly name, a TVM target dict, or that dict as a JSON string
    (``'{"kind": "llvm", "mcpu": "znver4"}'``, as the CLI's --target takes it); raises
    TargetError otherwise."""
    if isinstance(target, str) and target.lstrip().startswith("{"):
        try:
            target = json.loads(target)
        except ValueError as err:
            raise TargetError(f"target {target!r} is not a valid JSON dict: {err}") from None
        if not isinstance(target, dict) or not isinstance(target.get("kind"), str):
            raise TargetError(f"target {json.dumps(target)} needs a field 'kind' (e.g. \"llvm\")")
    if isinstance(target, str):
        name = native_target_name() if target == "native" else target
        if name not in TARGETS:
            raise TargetError(f"unknown target {target!r}; use one of "
                              f"{sorted([*TARGETS, 'native'])} or a TVM target dict")
        spec = dict(TARGETS[name])
    elif isinstance(target, dict):
        spec = dict(target)
    else:
        return target
    if num_cores is None and spec.get("mtriple") is None:
        num_cores = os.cpu_count()
    if num_cores:
        spec.setdefault("num-cores", int(num_cores))
    try:
        return _tvm_compat.make_target(spec)
    except Exception as err:  # TVM raises several error types for bad dicts
        raise TargetError(f"invalid target {target!r}: {err}") from None


def describe_target(target) -> str:
    """A short readable form of a TVM target (or its JSON string): its kind, then the attributes
    that tell CPUs apart (``llvm mcpu=znver4 mattr=+neon num-cores=2``)."""
    if not isinstance(target, (str, dict)):
        target = str(target)
    if isinstance(target, str):
        try:
            target = json.loads(target)
        except ValueError:
            return target
    if not isinstance(target, dict):
        return str(target)
    parts = [str(target.get("kind", "?"))]
    for key in ("mtriple", "mcpu", "mattr", "num-cores"):
        value = target.get(key)
        if value not in (None, "", []):
            value = ",".join(map(str, value)) if isinstance(value, list) else value
            parts.append(f"{key}={value}")
    return " ".join(parts)


def is_host_runnable(target) -> bool:
    """Whether code for ``target`` runs on this machine (no cross triple)."""
    mtriple = str(target.attrs.get("mtriple", "")) if target.attrs else ""
    return not mtriple or mtriple.startswith(os.uname().machine)
