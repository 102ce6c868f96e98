"""TVMScript builders shared by the shuffle intrinsics: one-hot look-up descriptions and impls."""

from __future__ import annotations

from tvm.script import tirx as T

TABLE_ENTRIES = 16


def broadcast_16(column, lanes: int):
    """A 16-entry vector repeated to ``lanes`` entries (``vpshufb`` shuffles each 128-bit lane)."""
    wide, width = column, TABLE_ENTRIES
    while width < lanes:
        width *= 2
        wide = T.vectorcombine(f"int8x{width}", wide, wide)
    return wide


def one_hot_desc(lanes: int, index_dtype: str, table_dtype: str, acc_dtype: str, entry):
    """``acc[i] += Select(int32(index[i]) == k, entry(tab[k]), 0)`` over ``lanes`` x 16: the
    form ``tensorize`` matches for ``lanes`` look-ups of one 16-entry table."""
    return _lookup_func(lanes, index_dtype, table_dtype, acc_dtype, entry=entry)


def vector_impl(lanes: int, index_dtype: str, table_dtype: str, acc_dtype: str, load, add):
    """The implementation of ``one_hot_desc``'s description with the same buffers:
    ``value = load(index, tab)`` (one let), then ``acc[0:lanes] += add(value, index)``."""
    return _lookup_func(lanes, index_dtype, table_dtype, acc_dtype, load=load, add=add)


def _lookup_func(lanes, index_dtype, table_dtype, acc_dtype, entry=None, load=None, add=None):
    describe = entry is not None  # a Python bool: TVMScript keeps only the branch taken

    @T.prim_func(s_tir=True)
    def func(index_h: T.handle, tab_h: T.handle, acc_h: T.handle) -> None:
        index = T.match_buffer(index_h, (lanes,), index_dtype, offset_factor=1)
        tab = T.match_buffer(tab_h, (TABLE_ENTRIES,), table_dtype, offset_factor=1)
        acc = T.match_buffer(acc_h, (lanes,), acc_dtype, offset_factor=1)
        with T.sblock("root"):
            T.reads(acc[0:lanes], index[0:lanes], tab[0:TABLE_ENTRIES])
            T.writes(acc[0:lanes])
            if describe:
                for i, k in T.grid(lanes, TABLE_ENTRIES):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        acc[vi] = acc[vi] + T.Select(
                            T.Cast("int32", index[vi]) == vk, entry(tab[vk]), T.int16(0)
                        )
            else:
                value = load(index, tab)
                acc[T.ramp(0, 1, lanes)] = acc[T.ramp(0, 1, lanes)] + add(value, index)

    return func.with_attr("global_symbol", "desc" if describe else "impl")
