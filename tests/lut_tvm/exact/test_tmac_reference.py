"""The T-MAC layout in NumPy (``lut_tvm.exact.reference.tmac``): mirror tables against direct
tables, nibble packing round trip, and the look-up matmul against the integer GEMM."""

import zlib

import numpy as np
import pytest

from lut_tvm.exact.reference import (QuantizedDense, bit_planes, group_patterns, int_gemm, quantize_weight,
                                     weight_scales)
from lut_tvm.exact.reference.tmac import (
    TMAC_LANES,
    direct_tables,
    lane_order,
    mirror_tables,
    pack_tmac,
    split_table_bytes,
    tmac_matmul,
    unpack_patterns,
)
from lut_tvm.testing import random_low_bit_weights


@pytest.mark.parametrize("signed", [False, True])
def test_mirror_tables_equal_direct_tables(signed):
    rng = np.random.default_rng(1)
    xq = rng.integers(-127, 128, (5, 37)).astype(np.int8)
    xq[0] = 127  # extremes: |T| = 508
    xq[1] = -127
    mirror = mirror_tables(xq, signed)
    np.testing.assert_array_equal(mirror, direct_tables(xq, signed))
    assert np.abs(mirror.astype(np.int64)).max() == 508
    if signed:
        np.testing.assert_array_equal(mirror[..., ::-1], -mirror)


def test_table_bytes_recombine_exactly():
    rng = np.random.default_rng(2)
    table = mirror_tables(rng.integers(-127, 128, (3, 64)).astype(np.int8))
    lo, hi = split_table_bytes(table)
    assert lo.dtype == np.uint8 and hi.dtype == np.int8
    np.testing.assert_array_equal(256 * hi.astype(np.int32) + lo, table)


@pytest.mark.parametrize("word", [False, True])
@pytest.mark.parametrize("lanes", TMAC_LANES)
def test_lane_order_is_a_bijection_onto_nibbles(lanes, word):
    byte, shift = lane_order(lanes, word)
    slots = set(zip(byte.tolist(), shift.tolist()))
    assert len(slots) == lanes and slots == {(b, s) for b in range(lanes // 2) for s in (0, 4)}


@pytest.mark.parametrize("lanes", TMAC_LANES)
def test_pack_round_trip(lanes):
    rng = np.random.default_rng(3)
    wq, bits = random_low_bit_weights(rng, 3, (21, 45))
    packed = pack_tmac(wq, bits, lanes)
    patterns = unpack_patterns(packed)
    want = group_patterns(bit_planes(wq, bits))
    np.testing.assert_array_equal(patterns[:, : want.shape[1], :45], want)
    assert not patterns[:, want.shape[1]:].any() and not patterns[:, :, 45:].any()


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8, "ternary"])
@pytest.mark.parametrize("lanes,word", [(16, False), (32, False), (64, False), (64, True)])
@pytest.mark.parametrize("rows,depth,cols", [(1, 37, 13), (3, 301, 70), (4, 520, 65)])
def test_tmac_matmul_equals_int_gemm(bits, lanes, word, rows, depth, cols):
    # A seed that is the same in every process (``hash`` of a str is salted per process).
    rng = np.random.default_rng(zlib.crc32(f"{bits}-{lanes}-{word}-{depth}".encode()))
    wq, stored_bits = random_low_bit_weights(rng, bits, (depth, cols))
    xq = rng.integers(-127, 128, (rows, depth)).astype(np.int8)
    xq[0, :] = 127  # the worst case for the int16 chunk sums
    got = tmac_matmul(xq, pack_tmac(wq, stored_bits, lanes, word))
    np.testing.assert_array_equal(got, int_gemm(xq, wq))


def test_bad_input_errors():
    with pytest.raises(ValueError, match="-1 or \\+1"):
        pack_tmac(np.zeros((4, 4), np.int8), 1)
    with pytest.raises(ValueError, match="lanes"):
        pack_tmac(np.ones((4, 4), np.int8), 2, lanes=48)
    with pytest.raises(ValueError, match="depth"):
        tmac_matmul(np.zeros((1, 5), np.int8), pack_tmac(np.ones((4, 4), np.int8), 2))


def test_binary_quantization_and_lut_reference():
    """1-bit weights: signs with the mean magnitude as scale; the LUT reference equals the GEMM."""
    rng = np.random.default_rng(9)
    weight = rng.standard_normal((37, 11)).astype(np.float32)
    weight[:, 3] = 0.0
    wq, scale = quantize_weight(weight, 1)
    np.testing.assert_array_equal(wq, np.where(weight >= 0, 1, -1))
    np.testing.assert_allclose(scale[:3], np.abs(weight[:, :3]).mean(axis=0), rtol=1e-6)
    assert scale[3] == 1.0 and np.array_equal(scale, weight_scales(weight, 1))
    layer = QuantizedDense.from_float(weight, 1, rng.standard_normal((20, 37)))
    x = rng.standard_normal((5, 37)).astype(np.float32)
    np.testing.assert_array_equal(layer(x, use_lut=True), layer(x))
