"""Read which LUT primitive a PrimFunc computes, from the attribute our kernel builders set."""

from __future__ import annotations

from tvm import tirx

from schedules.attrs import LUT_KIND_ATTR


def lut_kind(func: tirx.PrimFunc) -> str | None:
    """The LutKind of ``func``, or None for any other function."""
    if func.attrs is None or LUT_KIND_ATTR not in func.attrs:
        return None
    return str(func.attrs[LUT_KIND_ATTR])


def vector_lanes(target, dtype_bits: int) -> int:
    """Elements of ``dtype_bits`` per SIMD register on ``target`` (AVX-512: 512 bits, NEON: 128)."""
    keys = list(target.keys) if hasattr(target, "keys") else []
    attrs = {str(k): str(v) for k, v in target.attrs.items()} if target.attrs else {}
    mcpu = attrs.get("mcpu", "")
    mattr = attrs.get("mattr", "")
    if "avx512" in mcpu or "avx512" in mattr or mcpu in ("skylake-avx512", "cascadelake",
                                                         "icelake-server", "sapphirerapids",
                                                         "znver4"):
        width = 512
    elif "arm" in str(keys) or "aarch64" in attrs.get("mtriple", ""):
        width = 128
    else:
        width = 256
    return max(1, width // dtype_bits)


def has_block(sch, name: str) -> bool:
    """Whether the schedule ``sch`` has a block named ``name``."""
    try:
        sch.get_sblock(name)
    except Exception:  # pylint: disable=broad-except
        return False
    return True
