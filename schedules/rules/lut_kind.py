"""Read which LUT primitive a PrimFunc computes, from the attribute our kernel builders set."""

from __future__ import annotations

from tvm import tirx

from lut_tvm.target_features import target_features
from schedules.attrs import LUT_KIND_ATTR


def lut_kind(func: tirx.PrimFunc) -> str | None:
    """The LutKind of ``func``, or None for any other function."""
    if func.attrs is None or LUT_KIND_ATTR not in func.attrs:
        return None
    return str(func.attrs[LUT_KIND_ATTR])


def vector_lanes(target, dtype_bits: int) -> int:
    """Elements of ``dtype_bits`` per SIMD register on ``target`` (AVX-512: 512 bits, AVX2 256,
    NEON 128), from ``lut_tvm.target_features``."""
    return target_features(target).vector_lanes(dtype_bits)


def has_block(sch, name: str) -> bool:
    """Whether the schedule ``sch`` has a block named ``name``."""
    try:
        sch.get_sblock(name)
    except Exception:  # pylint: disable=broad-except
        return False
    return True
