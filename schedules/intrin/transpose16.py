"""In-register float32 square transposes (16 x 16 zmm, 8 x 8 ymm) as tensor intrinsics.

``xt[i, j] = x[j, i]`` for an ``n x n`` block of two strided float32 buffers: the dense row
encode (``schedules.rules.lut_encode_rows``, ``xt_mode="transpose"``) copies each 16-row tile
of ``x [M, D]`` transposed into ``[D, 16]`` with it, so that its products read plain vectors.

The implementation loads the ``n`` rows as contiguous vectors and runs a ``log2(n)``-stage
network of two-source shuffles (stage ``b`` swaps bit ``b`` of the row index with bit ``b``
of the column index; ``n / 2`` pairs, two shuffles each: 64 at n = 16, 24 at n = 8; on
skylake-avx512 LLVM emits 32 ``vshufps``, 16 ``vpermt2pd`` and 16 ``vshuff64x2``-class
shuffles), then stores the ``n`` rows as vectors: no per-element insert or scatter.
"""

from __future__ import annotations

import functools

from tvm import tirx
from tvm.script import tirx as T

from lut_tvm import _tvm_compat

from .registry import declare

TRANSPOSE_F32 = {16: "lut_tvm_transpose16_f32", 8: "lut_tvm_transpose8_f32"}


def _stage(rows: list, bit: int, size: int) -> list:
    """One network stage: swap bit ``bit`` of the row index with the same bit of the column."""
    step = 1 << bit
    out = list(rows)
    for low in range(size):
        if low & step:
            continue
        high = low | step
        # Index into [rows[low], rows[high]] of new[low][j] / new[high][j].
        source = [size if j & step else 0 for j in range(size)]
        out[low] = T.Shuffle([rows[low], rows[high]],
                             [s + (j & ~step) for j, s in enumerate(source)])
        out[high] = T.Shuffle([rows[low], rows[high]],
                              [s + (j | step) for j, s in enumerate(source)])
    return out


def transposed_rows(rows: list) -> list:
    """The ``n`` row vectors (``n`` lanes each, ``n`` a power of two) of the transpose."""
    size = len(rows)
    for bit in range(size.bit_length() - 1):
        rows = _stage(rows, bit, size)
    return rows


def _func(size: int, describe: bool):
    vec = f"float32x{size}"

    @T.prim_func(s_tir=True)
    def func(x_h: T.handle, xt_h: T.handle) -> None:
        x_stride = T.int32()
        xt_stride = T.int32()
        x = T.match_buffer(x_h, (size, size), "float32", strides=[x_stride, 1], offset_factor=1)
        xt = T.match_buffer(xt_h, (size, size), "float32", strides=[xt_stride, 1],
                            offset_factor=1)
        with T.sblock("root"):
            T.reads(x[0:size, 0:size])
            T.writes(xt[0:size, 0:size])
            if describe:
                for i, j in T.grid(size, size):
                    with T.sblock("transpose"):
                        vi, vj = T.axis.remap("SS", [i, j])
                        xt[vi, vj] = x[vj, vi]
            else:
                T.evaluate(0)  # a template: ``_impl`` replaces this body

    if describe:
        return func.with_attr("global_symbol", "desc")
    return _impl(func, size, vec)


def _impl(template, size: int, vec: str):
    """The template's body replaced by ``size`` row loads (one let each), the network and
    ``size`` row stores."""
    root = template.body.block
    x, xt = root.reads[0].source, root.writes[0].source
    ramp = tirx.Ramp(tirx.const(0, "int32"), tirx.const(1, "int32"), size)
    rows = [tirx.Var(f"row{i}", vec) for i in range(size)]
    lets = [(row, tirx.BufferLoad(x, [tirx.const(i, "int32"), ramp])) for i, row in enumerate(rows)]
    stores = [tirx.BufferStore(xt, value, [tirx.const(i, "int32"), ramp])
              for i, value in enumerate(transposed_rows(rows))]
    return _tvm_compat.with_root_lets_and_stores(template, lets, stores).with_attr(
        "global_symbol", "impl")


def _transpose_pair(size: int) -> tuple:
    return _func(size, True), _func(size, False)


for _size, _name in TRANSPOSE_F32.items():  # registered on first use (``registry.ensure``)
    declare(_name, functools.partial(_transpose_pair, _size))
