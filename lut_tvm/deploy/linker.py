"""How a compiled model is written for its target: which (cross) linker makes the shared library,
or, when none fits, a ``.tar`` of the objects -- and a sentence saying which and why.

Search order for a cross target (the target's ``mtriple``):

* ``aarch64-linux-gnu`` (``arm64``): an explicit ``cc`` / ``$LUT_TVM_CROSS_CXX``;
  ``aarch64-linux-gnu-g++`` on PATH; ``zig cc -target aarch64-linux-gnu`` from the
  ``ziglang`` wheel (``pip install ziglang``).
* ``aarch64-linux-android`` (``android-arm64``): an explicit ``cc`` / ``$LUT_TVM_CROSS_CXX`` /
  ``$TVM_NDK_CC``; the NDK's ``aarch64-linux-android<API>-clang++`` under ``ndk`` /
  ``$ANDROID_NDK_HOME`` / ``$ANDROID_NDK_ROOT`` / ``$ANDROID_NDK`` (API ``$LUT_TVM_ANDROID_API``,
  default 28, else the highest the NDK has). zig has no bionic libc, so it is not used here.

A target that runs on this machine links with the host compiler, as before.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TargetError

DEFAULT_ANDROID_API = 28
_NDK_ENV = ("ANDROID_NDK_HOME", "ANDROID_NDK_ROOT", "ANDROID_NDK")


@dataclass
class Linker:
    """A command that links TVM's objects into a shared library for one target triple."""

    name: str
    command: list[str]
    options: list[str] = field(default_factory=list)

    def fcompile(self):
        """An ``export_library`` ``fcompile`` running this linker."""

        def link(output, objects, options=None, **_kwargs):
            extra = list(options) if isinstance(options, (list, tuple)) else ([options] if options else [])
            cmd = [*self.command, "-shared", "-fPIC", "-o", str(output), *map(str, objects),
                   *self.options, *extra]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise TargetError(f"linking {output} with {self.name} failed "
                                  f"({' '.join(cmd)}):\n{proc.stdout}{proc.stderr}")

        link.output_format = "so"
        return link


@dataclass
class ExportPlan:
    """What ``CompiledModel.export`` will write: a linked ``.so`` (``linker``) or a ``.tar``."""

    kind: str  # "so" | "tar"
    linker: Linker | None  # None for a host target: TVM's default (host) compiler
    reason: str

    def describe(self, path) -> str:
        if self.kind == "tar":
            return f"wrote {path}: a .tar of unlinked objects, because {self.reason}"
        if self.linker is None:
            return f"wrote {path}: shared library ({self.reason})"
        return f"wrote {path}: shared library linked with {self.linker.name} ({self.reason})"


def target_triple(target) -> str:
    """The ``mtriple`` of a TVM target, target dict or its JSON string ('' for the host)."""
    if isinstance(target, str):
        try:
            target = json.loads(target)
        except ValueError:
            return ""
    if isinstance(target, dict):
        return str(target.get("mtriple", "") or "")
    attrs = getattr(target, "attrs", None) or {}
    return str(attrs["mtriple"]) if "mtriple" in attrs else ""


def is_cross(triple: str) -> bool:
    return bool(triple) and not triple.startswith(os.uname().machine)


def _explicit(cc) -> Linker | None:
    if not cc:
        return None
    command = cc.split() if isinstance(cc, str) else list(cc)
    if shutil.which(command[0]) is None and not Path(command[0]).is_file():
        raise TargetError(f"cross linker {command[0]!r} (from cc= or $LUT_TVM_CROSS_CXX) not found")
    return Linker(" ".join(command), command)


def zig_linker(triple: str) -> Linker | None:
    """``python -m ziglang cc -target TRIPLE`` when the ziglang wheel is installed.

    ``cc``, not ``c++``: TVM's objects need only the C library, and zig builds libc++ for a new
    triple on first use (minutes); its first link for a triple still takes a minute or so.
    """
    if importlib.util.find_spec("ziglang") is None:
        return None
    return Linker(f"zig cc -target {triple} (ziglang)",
                  [sys.executable, "-m", "ziglang", "cc", "-target", triple])


def ndk_clang(ndk: str | os.PathLike | None = None, api: int | None = None) -> Path | None:
    """The NDK's aarch64 Android clang++ (``api`` or the default/highest level), or None."""
    roots = [Path(ndk)] if ndk else [Path(os.environ[v]) for v in _NDK_ENV if os.environ.get(v)]
    api = api or int(os.environ.get("LUT_TVM_ANDROID_API", DEFAULT_ANDROID_API))
    for root in roots:
        bins = sorted(glob.glob(str(root / "toolchains" / "llvm" / "prebuilt" / "*" / "bin")))
        for bin_dir in bins:
            exact = Path(bin_dir) / f"aarch64-linux-android{api}-clang++"
            if exact.is_file():
                return exact
            found = glob.glob(str(Path(bin_dir) / "aarch64-linux-android*-clang++"))
            if found:
                return Path(max(found, key=_android_api_level))
    return None


def _android_api_level(path: str) -> int:
    match = re.search(r"android(\d+)-clang", Path(path).name)
    return int(match.group(1)) if match else 0


def plan_export(target, cc=None, ndk=None) -> ExportPlan:
    """Choose how to write a model compiled for ``target`` (see the module docstring)."""
    triple = target_triple(target)
    if not is_cross(triple):
        return ExportPlan("so", None, "the target runs on this machine: host compiler")
    cc = cc or os.environ.get("LUT_TVM_CROSS_CXX")
    android = "android" in triple
    if android:
        cc = cc or os.environ.get("TVM_NDK_CC")
    linker = _explicit(cc)
    if linker is not None:
        return ExportPlan("so", linker, f"cross linker given for {triple}")
    tried = []
    if android:
        clang = ndk_clang(ndk)
        if clang is not None:
            return ExportPlan("so", Linker(f"Android NDK {clang.name}", [str(clang)]),
                              f"NDK found for {triple}")
        tried.append("the Android NDK (ndk= / $ANDROID_NDK_HOME / $ANDROID_NDK_ROOT: none set or "
                     "no aarch64-linux-android*-clang++ in it)")
    elif triple.startswith("aarch64") and "linux" in triple:
        gxx = shutil.which("aarch64-linux-gnu-g++")
        if gxx:
            return ExportPlan("so", Linker("aarch64-linux-gnu-g++", [gxx]),
                              f"cross linker for {triple} on PATH")
        tried.append("aarch64-linux-gnu-g++ (not on PATH; apt-get install g++-aarch64-linux-gnu)")
        zig = zig_linker("aarch64-linux-gnu")
        if zig is not None:
            return ExportPlan("so", zig, f"no aarch64-linux-gnu-g++; the ziglang wheel links for {triple}")
        tried.append("ziglang (not installed; pip install ziglang)")
    else:
        tried.append(f"no known cross linker for {triple}")
    return ExportPlan("tar", None, f"no cross linker for {triple} was found (tried: {'; '.join(tried)}); "
                      "link the objects on the device or pass cc=/$LUT_TVM_CROSS_CXX")
