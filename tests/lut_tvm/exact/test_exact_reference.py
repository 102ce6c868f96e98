"""LUT-NA exact mode, NumPy reference: the LUT decomposition equals integer GEMM bit for bit."""

import numpy as np
import pytest

from lut_tvm.exact import reference as ref

BITS = list(range(2, 9))
# Odd shapes: D not a multiple of the group (4), N odd, M = 1 included.
SHAPES = [(1, 1, 1), (3, 5, 7), (7, 37, 13), (2, 131, 9)]


def _pruned_weight(rng, depth, cols, sparsity):
    weight = rng.standard_normal((depth, cols)).astype(np.float32)
    weight[rng.random(weight.shape) < sparsity] = 0.0
    if cols > 2:
        weight[:, 1] = 0.0  # a fully pruned column
    return weight


def _activations(rng, rows, depth):
    xq = rng.integers(-127, 128, size=(rows, depth)).astype(np.int8)
    xq[0, :] = 127 if rows > 1 else xq[0, :]  # saturated row: largest table entries
    return xq


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sparsity", [0.0, 0.8])
def test_exact_lut_equals_int_gemm(bits, shape, sparsity):
    rng = np.random.default_rng(bits * 100 + shape[1])
    rows, depth, cols = shape
    wq, _ = ref.quantize_weight(_pruned_weight(rng, depth, cols, sparsity), bits)
    xq = _activations(rng, rows, depth)
    got = ref.exact_lut_matmul(xq, ref.pack_exact(wq, bits))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, ref.int_gemm(xq, wq))


@pytest.mark.parametrize("bits", BITS)
def test_full_twos_complement_range_is_exact(bits):
    """Weights at -2^(b-1) (outside the symmetric range, still b bits) and activations at ±127."""
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    wq = np.array([[low, high, 0, low, 1], [high, low, -1, low, 0], [low, low, low, high, high]],
                  dtype=np.int8).T.copy()  # [5, 3]
    xq = np.array([[-127, 127, -127, 127, -127], [127] * 5, [-127] * 5], dtype=np.int8)
    np.testing.assert_array_equal(ref.exact_lut_matmul(xq, ref.pack_exact(wq, bits)),
                                  ref.int_gemm(xq, wq))


@pytest.mark.parametrize("piece_bits", [1, 2, 4])
@pytest.mark.parametrize("bits", BITS)
def test_piece_decompositions_are_exact(bits, piece_bits):
    """Bit planes, 2-bit crumbs and nibbles (signed top digit) all equal integer GEMM."""
    rng = np.random.default_rng(bits + 10 * piece_bits)
    wq, _ = ref.quantize_weight(_pruned_weight(rng, 23, 5, 0.5), bits)
    xq = _activations(rng, 4, 23)
    np.testing.assert_array_equal(ref.piece_lut_matmul(xq, wq, bits, piece_bits),
                                  ref.int_gemm(xq, wq))


def test_zero_groups_are_skipped_per_column():
    rng = np.random.default_rng(3)
    wq = rng.integers(-7, 8, size=(16, 3)).astype(np.int8)
    wq[wq == 0] = 1
    wq[4:16, 0] = 0  # column 0: only group 0 nonzero
    wq[0:8, 1] = 0  # column 1: groups 2, 3
    wq[:, 2] = 0  # column 2: nothing
    packed = ref.pack_exact(wq, 4)
    assert packed.num_groups == 4 and packed.max_groups == 2
    assert packed.nonzero_groups.sum(axis=0).tolist() == [1, 2, 0]
    assert packed.group_index[:, 1].tolist() == [2, 3]
    # Padding entries select pattern 0, whose table entry is 0.
    assert (packed.patterns[:, 1:, 0] == 0).all() and (packed.patterns[:, :, 2] == 0).all()
    xq = rng.integers(-127, 128, size=(5, 16)).astype(np.int8)
    np.testing.assert_array_equal(ref.exact_lut_matmul(xq, packed), ref.int_gemm(xq, wq))


def test_tables_hold_every_subset_sum():
    xq = np.array([[1, 10, 100, -50, 3]], dtype=np.int8)
    tables = ref.activation_tables(xq)
    assert tables.shape == (1, 2, 16) and tables.dtype == np.int16
    assert tables[0, 0].tolist() == [0, 1, 10, 11, 100, 101, 110, 111,
                                     -50, -49, -40, -39, 50, 51, 60, 61]
    assert tables[0, 1, :2].tolist() == [0, 3] and (tables[0, 1, 2:4] == [0, 3]).all()


def test_bit_planes_and_coefficients_rebuild_weights():
    wq = np.arange(-8, 8, dtype=np.int8).reshape(4, 4)
    planes = ref.bit_planes(wq, 4)
    rebuilt = np.tensordot(ref.plane_coefficients(4), planes.astype(np.int64), axes=1)
    np.testing.assert_array_equal(rebuilt, wq)
    with pytest.raises(ValueError, match="outside the 3-bit range"):
        ref.bit_planes(wq, 3)
    with pytest.raises(ValueError, match=r"\[1, 8\]"):
        ref.pack_exact(wq, 9)


@pytest.mark.parametrize("bits", BITS)
def test_weight_quantization_is_symmetric_per_channel(bits):
    rng = np.random.default_rng(bits)
    weight = rng.standard_normal((11, 5)).astype(np.float32) * np.arange(1, 6, dtype=np.float32)
    weight[:, 4] = 0.0
    wq, scale = ref.quantize_weight(weight, bits)
    qmax = 2 ** (bits - 1) - 1
    assert wq.dtype == np.int8 and np.abs(wq).max() == qmax
    np.testing.assert_array_equal(np.abs(wq[:, :4]).max(axis=0), qmax)  # each channel uses its range
    assert scale[4] == 1.0 and (wq[:, 4] == 0).all()
    err = np.abs(wq * scale - weight)
    assert (err <= scale / 2 + 1e-6).all()


def test_activation_quantization_rounds_half_to_even_and_clips():
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 300.0, -300.0], dtype=np.float32)
    assert ref.quantize_activations(x, 1.0).tolist() == [0, 2, 2, 0, -2, 127, -127]
    assert ref.calibrate_activation_scale(np.array([-254.0, 3.0])) == np.float32(2.0)
    assert ref.calibrate_activation_scale(np.zeros(3)) == np.float32(1.0)


def test_quantized_layer_lut_path_equals_gemm_path():
    rng = np.random.default_rng(7)
    weight = rng.standard_normal((29, 6)).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32)
    x = rng.standard_normal((5, 29)).astype(np.float32) * 2
    layer = ref.QuantizedDense.from_float(weight, 3, x, bias)
    for relu in (False, True):
        np.testing.assert_array_equal(layer(x, relu=relu, use_lut=True), layer(x, relu=relu))
    # and it approximates the float layer (3-bit weights: loose)
    approx = np.corrcoef(layer(x).ravel(), (x @ weight + bias).ravel())[0, 1]
    assert approx > 0.9


@pytest.mark.parametrize("bits", [2, 5, 8])
def test_equals_quantized_torch_layer(bits):
    """The same quantized layer written with torch ops gives bit-identical float outputs."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(bits)
    weight = rng.standard_normal((33, 7)).astype(np.float32)
    weight[rng.random(weight.shape) < 0.6] = 0.0
    bias = rng.standard_normal(7).astype(np.float32)
    x = rng.standard_normal((6, 33)).astype(np.float32) * 3
    layer = ref.QuantizedDense.from_float(weight, bits, x[:3], bias)  # clipping rows too

    tx = torch.from_numpy(x)
    xq = torch.clamp(torch.round(tx / torch.tensor(layer.act_scale)), -127, 127).to(torch.int64)
    acc = xq @ torch.from_numpy(layer.wq.astype(np.int64)) + torch.from_numpy(layer.bias_q.astype(np.int64))
    y = acc.to(torch.int32).to(torch.float32) * torch.from_numpy(layer.out_scale)
    np.testing.assert_array_equal(layer(x, use_lut=True), y.numpy())
