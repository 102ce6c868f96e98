"""TE compute of the exact T-MAC kernel: per-call mirror tables, nibble-packed weights, byte shuffles.

Layout and math: ``lut_tvm.exact.reference.tmac`` (its docstring). Stages:

* ``exact_quant`` ``xq [M, D]`` int8 (``exact_lut_compute.quantize_activations``);
* ``tmac_pad`` ``[M, 4 Gp]`` int16: the activations, zero past ``D``;
* ``tmac_table`` ``[M, Gp, 16]`` int16: the exact table of each group (``T[k] = sum_i bit_i(k)
  x_i``; 1-bit {-1, +1} weights: ``sum_i (2 bit_i(k) - 1) x_i``), the values of the mirror
  construction (``mirror_byte_tables``);
* ``tmac_table_lo`` / ``tmac_table_hi`` ``[M, Gp, 16]`` uint8 / int8: its bytes, ``T = 256 hi + lo``
  (exact: no table quantization); the word form (``word``) looks ``tmac_table`` up whole;
* ``tmac_acc16`` ``[C, b, M, NT, L]`` int16: per chunk ``c`` of at most 64 groups and plane
  ``j``, ``sum_{e, k} Select(nibble(W[j, t, c P + e], l) == k, table(m, c P + e, k), 0)``
  (``schedules.intrin.tmac``'s description, so it tensorizes to the byte shuffles);
* ``tmac_combine`` ``[M, NT, L]`` int32: shift-and-add over planes and chunks;
* ``tmac_out`` ``[M, N]`` float32 ``float32(acc + bias_q) * out_scale`` (optional ReLU), column
  ``n`` read from tile ``n // L``, lane ``n % L`` (the padding columns are never written out).
"""

from __future__ import annotations

from tvm import te, tirx

from lut_tvm.exact.reference.tmac import chunk_groups, check_tmac_bits
from .attrs import LutKind
from .exact_lut_compute import ACC_DTYPE, GROUP, TABLE_DTYPE, TABLE_ENTRIES, layer_input, to_exact_prim_func
from .intrin.tmac import ACC_DTYPE as ACC16_DTYPE, HIGH_DTYPE, LOW_DTYPE, PATTERN_DTYPE, nibble, table_entry

TMAC_KIND = LutKind.EXACT_TMAC
TABLE_BLOCK = "tmac_table"
PAD_BLOCK = "tmac_pad"
LO_BLOCK = "tmac_table_lo"
HI_BLOCK = "tmac_table_hi"
ACC16_BLOCK = "tmac_acc16"
COMBINE_BLOCK = "tmac_combine"
OUT_BLOCK = "tmac_out"


def padded_activations(xq: te.Tensor, groups: int) -> te.Tensor:
    """int16 ``[M, 4 groups]``: the activations widened, zero past ``D`` (the tail group)."""
    depth = int(xq.shape[1])
    if depth == groups * GROUP:  # no tail: a plain widening, which vectorizes
        return te.compute(xq.shape, lambda m, d: xq[m, d].astype(TABLE_DTYPE), name=PAD_BLOCK)
    return te.compute(
        (int(xq.shape[0]), groups * GROUP),
        lambda m, d: tirx.if_then_else(d < depth, xq[m, tirx.min(d, depth - 1)].astype(TABLE_DTYPE),
                                       tirx.const(0, TABLE_DTYPE)),
        name=PAD_BLOCK)


def table_coefficient(k, i, signed: bool):
    """int16 weight of activation ``i`` in entry ``k``: ``bit_i(k)`` (signed: ``2 bit_i(k) - 1``)."""
    bit = tirx.bitwise_and(tirx.shift_right(k, i), 1).astype(TABLE_DTYPE)
    return bit * tirx.const(2, TABLE_DTYPE) - tirx.const(1, TABLE_DTYPE) if signed else bit


def mirror_byte_tables(xq: te.Tensor, groups: int, signed: bool, word: bool = False):
    """``(lo uint8, hi int8)`` ``[M, groups, 16]`` of the exact int16 table ``tmac_table``
    (``word``: ``(tmac_table, None)``). The entries are those of the mirror construction
    (``reference.tmac.mirror_tables``: ``T[15 - k] = S - T[k]``, signed ``-T[k]``), computed
    here as ``sum_i c(k, i) x_i`` with constant coefficient vectors: with the 16 entries of a
    group in one vector register, 4 broadcast multiply-adds build all of them, as cheap as
    8 entries and a mirror."""
    rows = int(xq.shape[0])
    padded = padded_activations(xq, groups)

    def entry(m, g, k):
        terms = [padded[m, g * GROUP + i] * table_coefficient(k, i, signed) for i in range(GROUP)]
        return terms[0] + terms[1] + terms[2] + terms[3]

    table = te.compute((rows, groups, TABLE_ENTRIES), entry, name=TABLE_BLOCK)
    if word:
        return table, None
    lo = te.compute(table.shape, lambda m, g, k: tirx.bitwise_and(table[m, g, k], 255).astype(LOW_DTYPE),
                    name=LO_BLOCK)
    hi = te.compute(table.shape, lambda m, g, k: tirx.shift_right(table[m, g, k], 8).astype(HIGH_DTYPE),
                    name=HI_BLOCK)
    return lo, hi


def tmac_accumulator(xq: te.Tensor, nibbles: te.Tensor, signed: bool, word: bool = False) -> te.Tensor:
    """int16 ``acc16 [C, b, M, NT, L]`` (see the module docstring); ``word``: int16 tables and
    the word-permute nibble order."""
    bits, tiles, groups, half_lanes = (int(d) for d in nibbles.shape)
    lanes = 2 * half_lanes
    chunks, per_chunk = chunk_groups(groups)
    if chunks * per_chunk != groups:
        raise ValueError(f"nibbles {tuple(nibbles.shape)}: {groups} groups are not whole chunks")
    lo, hi = mirror_byte_tables(xq, groups, signed, word)
    e = te.reduce_axis((0, per_chunk), name="e")
    k = te.reduce_axis((0, TABLE_ENTRIES), name="k")

    def lookup(c, j, m, t, lane):
        g = c * per_chunk + e
        index = nibble(lambda byte: nibbles[j, t, g, byte], lane, lanes, word)
        value = lo[m, g, k] if word else table_entry(lo[m, g, k], hi[m, g, k])
        return te.sum(tirx.Select(index == k, value, tirx.const(0, ACC16_DTYPE)), axis=[e, k])

    return te.compute((chunks, bits, int(xq.shape[0]), tiles, lanes), lookup, name=ACC16_BLOCK)


def plane_coefficient(j, bits: int):
    """int32 weight of plane ``j``: ``2^j``, the sign plane ``-2^(b-1)``; 1 for 1-bit weights."""
    if bits == 1:
        return tirx.const(1, ACC_DTYPE)
    sign = tirx.Select(j == bits - 1, tirx.const(-1, ACC_DTYPE), tirx.const(1, ACC_DTYPE))
    return sign * tirx.shift_left(tirx.const(1, ACC_DTYPE), j)


def tmac_output(xq, nibbles, bits: int, out_scale, bias_q, relu: bool, word: bool) -> te.Tensor:
    """float32 ``[M, N]``: look-ups, shift-and-add, + bias_q, dequantized."""
    acc = tmac_accumulator(xq, nibbles, bits == 1, word)
    chunks, planes, rows, tiles, lanes = (int(d) for d in acc.shape)
    c = te.reduce_axis((0, chunks), name="c")
    j = te.reduce_axis((0, planes), name="j")
    combined = te.compute(
        (rows, tiles, lanes),
        lambda m, t, n: te.sum(acc[c, j, m, t, n].astype(ACC_DTYPE) * plane_coefficient(j, bits),
                               axis=[c, j]),
        name=COMBINE_BLOCK)

    def epilogue(m, n):
        value = (combined[m, n // lanes, n % lanes] + bias_q[n]).astype("float32") * out_scale[n]
        return tirx.max(value, tirx.const(0.0, "float32")) if relu else value

    return te.compute((rows, int(out_scale.shape[0])), epilogue, name=OUT_BLOCK)


def tmac_func(input_shape, geometry, bits: int, depth_groups: int, out_features: int, lanes: int,
              act_scale: float, relu: bool = False, word: bool = False) -> tirx.PrimFunc:
    """``(x, nibbles [b, NT, Gp, L/2] u8, out_scale [N] f32, bias_q [N] i32) -> y [M, N] f32``; ``x`` is ``[M, D]`` (``geometry`` None) or NCHW (conv2d windows);
    ``depth_groups`` is ``Gp`` (groups padded to whole chunks, ``TmacPacked.padded_groups``);
    ``word``: the int16 word-permute form (AVX-512BW ``vpermw``, ``L = 64``)."""
    bits = check_tmac_bits(bits)
    x, xq, kind = layer_input(input_shape, geometry, act_scale)
    tiles = -(-out_features // lanes)
    nibbles = te.placeholder((bits, tiles, depth_groups, lanes // 2), PATTERN_DTYPE, "nibbles")
    out_scale = te.placeholder((out_features,), "float32", "out_scale")
    bias_q = te.placeholder((out_features,), ACC_DTYPE, "bias_q")
    y = tmac_output(xq, nibbles, bits, out_scale, bias_q, relu, word)
    return to_exact_prim_func([x, nibbles, out_scale, bias_q, y], TMAC_KIND, bits=bits, float_io=1,
                              relu=int(relu), input=kind, word=int(word))
