"""What a TVM target's CPU can do (vector width, byte shuffles, VBMI, integer dot products), asked of
LLVM from the target's ``mtriple`` / ``mcpu`` / ``mattr``: the one place rules, intrinsics and
tuning spaces learn it (the target says what generated code may use, not the host CPU)."""

from __future__ import annotations

from dataclasses import dataclass

from . import _tvm_compat
from .targets import host_cpu_flags, resolve_target

_X86_FEATURES = ("ssse3", "avx2", "avx512f", "avx512bw", "avx512vbmi", "avx512vnni", "avxvnni")
_ARM_FEATURES = ("neon", "dotprod", "i8mm")


@dataclass(frozen=True)
class TargetFeatures:
    """The CPU features of one target that the kernels choose by."""

    arch: str  # "x86", "aarch64" or "other" (a non-LLVM or unknown target)
    features: frozenset[str]

    def has(self, feature: str) -> bool:
        return feature in self.features

    @property
    def vector_bits(self) -> int:
        """Width of one SIMD register the schedules vectorize for (AVX-512 512, NEON 128, else 256)."""
        if self.arch == "aarch64":
            return 128
        return 512 if self.has("avx512f") else 256

    def vector_lanes(self, dtype_bits: int) -> int:
        """Elements of ``dtype_bits`` per SIMD register."""
        return max(1, self.vector_bits // max(int(dtype_bits), 8))

    @property
    def shuffle_lanes(self) -> int:
        """Bytes looked up by one 16-entry byte shuffle (vpshufb zmm 64, ymm 32; NEON tbl 16), 0 if none."""
        if self.arch == "aarch64":
            return 16 if self.has("neon") else 0
        if self.arch != "x86":
            return 0
        return 64 if self.has("avx512bw") else 32 if self.has("avx2") else 0

    @property
    def byte_permute_128(self) -> bool:
        """AVX-512 VBMI: ``vpermb`` / ``vpermi2b`` look up 64/128-entry byte tables (K = 32/64)."""
        return self.arch == "x86" and self.has("avx512vbmi")


def _attrs(target) -> tuple[str, str, str]:
    attrs = {str(k): v for k, v in target.attrs.items()} if target.attrs else {}
    mattr = attrs.get("mattr", "")
    mattr = ",".join(str(x) for x in mattr) if not isinstance(mattr, str) else mattr
    return str(attrs.get("mtriple", "")), str(attrs.get("mcpu", "")), mattr


_CACHE: dict[str, TargetFeatures] = {}


def _features_of(kind: str, mtriple: str, mcpu: str, mattr: str, target) -> TargetFeatures:
    if kind != "llvm":
        return TargetFeatures("other", frozenset())
    if mtriple.startswith(("aarch64", "arm64")):
        arch, names = "aarch64", _ARM_FEATURES
    elif not mtriple or mtriple.startswith(("x86_64", "i686", "x86")):
        arch, names = "x86", _X86_FEATURES
    else:
        return TargetFeatures("other", frozenset())
    found = {name for name in names if _tvm_compat.target_has_feature(name, target)}
    # LLVM knows the features of a named CPU; an explicit "+feature" in mattr also counts.
    found |= {flag[1:] for flag in mattr.split(",") if flag.startswith("+") and flag[1:] in names}
    if arch == "aarch64" and not mcpu and "-neon" not in mattr:
        found.add("neon")  # AArch64 always has Advanced SIMD
    return TargetFeatures(arch, frozenset(found))


def target_features(target) -> TargetFeatures:
    """The features of a TVM ``target`` (cached per target string)."""
    key = str(target)
    if key not in _CACHE:
        mtriple, mcpu, mattr = _attrs(target)
        _CACHE[key] = _features_of(str(target.kind.name), mtriple, mcpu, mattr, target)
    return _CACHE[key]


# /proc/cpuinfo's names of the x86 features, where they differ from LLVM's.
_CPUINFO_NAMES = {"avx512vnni": "avx512_vnni", "avxvnni": "avx_vnni"}


def host_target():
    """A TVM target for this machine's CPU model as LLVM names it (``mcpu`` = the host CPU)."""
    return resolve_target({"kind": "llvm", "mcpu": _tvm_compat.llvm_host_cpu()})


def host_features() -> TargetFeatures:
    """What this machine's CPU runs: ``target_features(host_target())``, each x86 feature kept only
    if /proc/cpuinfo lists it too (a virtual machine may hide features of its CPU model). For tests
    and benchmarks that must skip what the host cannot run."""
    features = target_features(host_target())
    if features.arch != "x86":
        return features
    flags = host_cpu_flags()
    return TargetFeatures("x86", frozenset(f for f in features.features
                                           if _CPUINFO_NAMES.get(f, f) in flags))
