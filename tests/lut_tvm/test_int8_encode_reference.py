"""The int8 encode's NumPy reference (``lut_tvm.int8_encode_reference``) against an independent
statement of its math: the nearest centroid of the quantized input on each codebook's integer grid."""

import numpy as np

from lut_tvm import int8_encode_reference as r8
from lut_tvm import reference as ref


def _grid_nearest(rows, centroids):
    """Brute force in int64: ``argmin_k ||xq - Pq||^2`` with the levels computed here."""
    num_codebooks, _, sub_len = centroids.shape
    peak = np.abs(centroids).reshape(num_codebooks, -1).max(1)
    inv = np.where(peak > 0, np.float32(64) / np.where(peak > 0, peak, 1).astype(np.float32), 1)
    inv = inv.astype(np.float32)
    pq = np.clip(np.rint(centroids * inv[:, None, None]), -64, 64).astype(np.int64)
    subs = rows.reshape(len(rows), num_codebooks, sub_len) * inv[None, :, None]
    xq = np.clip(np.rint(subs), -128, 127).astype(np.int64)
    dist = ((xq[:, :, None, :] - pq[None]) ** 2).sum(-1)
    return dist.argmin(-1).astype(np.uint8)


def test_codes_are_the_nearest_quantized_centroid():
    rng = np.random.default_rng(5)
    for sub_len in (2, 3, 4, 9, 16):
        centroids = rng.standard_normal((6, 16, sub_len)).astype(np.float32)
        rows = (rng.standard_normal((50, 6 * sub_len)) * 1.5).astype(np.float32)
        rows[0] = 40.0  # far outside the centroids: clipped at +127
        rows[1] = -40.0
        np.testing.assert_array_equal(r8.encode_int8(rows, centroids), _grid_nearest(rows, centroids))


def test_operand_ranges_keep_vpmaddubsw_exact():
    """Unsigned centroids in [0, 128], inputs in [-128, 127]: no int16 pair sum can saturate."""
    rng = np.random.default_rng(6)
    centroids = (rng.standard_normal((4, 16, 5)) * 100).astype(np.float32)
    pu, norms, inv = r8.quantize_centroids(centroids)
    assert pu.shape == (4, 16, 8) and pu.dtype == np.uint8 and norms.dtype == np.int32
    assert pu.min() >= 0 and pu.max() == 128 and pu.min() == 0  # +-64 reached: the extremes
    assert (pu[..., 5:] == r8.CENTROID_OFFSET).all()  # padding is the level 0
    xq = r8.quantize_input(rng.standard_normal((9, 20)).astype(np.float32) * 1e4, inv, 5)
    assert xq.min() == -128 and xq.max() == 127 and (xq[..., 5:] == 0).all()
    worst = 2 * int(pu.max()) * max(abs(int(xq.min())), int(xq.max()))
    assert worst <= 32768 and 2 * int(pu.max()) * int(xq.max()) <= 32767


def test_zero_codebook_and_ties():
    centroids = np.zeros((2, 4, 3), np.float32)
    centroids[1] = [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]]  # 0 and 2 tie
    _, _, inv = r8.quantize_centroids(centroids)
    assert inv[0] == 1.0
    rows = np.array([[0.5, 0.5, 0.5, 1.0, 0.0, 0.0]], np.float32)
    np.testing.assert_array_equal(r8.encode_int8(rows, centroids), [[0, 0]])


def test_agrees_with_the_float_encode_away_from_near_ties():
    """Well-separated data: the int8 codes are the float encode's (the quantization moves a
    distance by far less than the gap)."""
    rng = np.random.default_rng(8)
    centroids = rng.standard_normal((5, 16, 4)).astype(np.float32)
    pick = rng.integers(0, 16, (200, 5))
    rows = centroids[np.arange(5)[None], pick].reshape(200, -1)
    rows = rows + rng.standard_normal(rows.shape).astype(np.float32) * 0.01
    np.testing.assert_array_equal(r8.encode_int8(rows, centroids), ref.encode(rows, centroids))
