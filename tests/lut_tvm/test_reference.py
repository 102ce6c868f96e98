"""The NumPy reference of the LUT math, checked against first principles (not against itself)."""

import numpy as np
import pytest

from lut_tvm import reference as ref

# (input NCHW, weight OIHW, strides, padding (top, left, bottom, right), dilation)
CONV_CASES = [
    ((1, 3, 7, 5), (4, 3, 3, 3), (1, 1), (0, 0, 0, 0), (1, 1)),
    ((2, 3, 9, 7), (5, 3, 3, 2), (2, 2), (1, 0, 2, 1), (1, 1)),
    ((2, 2, 11, 8), (3, 2, 3, 3), (1, 1), (1, 0, 2, 1), (2, 2)),
    ((1, 3, 10, 9), (4, 3, 2, 3), (2, 1), (0, 2, 1, 0), (2, 1)),
    ((1, 1, 5, 6), (2, 1, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1)),
]


def loop_conv2d(x, w, strides, padding, dilation):
    """Direct-definition NCHW/OIHW conv2d in float64, one output element at a time."""
    batch, cin, height, width = x.shape
    cout, _, kh, kw = w.shape
    top, left, bottom, right = padding
    padded = np.zeros((batch, cin, height + top + bottom, width + left + right))
    padded[:, :, top : top + height, left : left + width] = x
    out_h = (height + top + bottom - dilation[0] * (kh - 1) - 1) // strides[0] + 1
    out_w = (width + left + right - dilation[1] * (kw - 1) - 1) // strides[1] + 1
    out = np.zeros((batch, cout, out_h, out_w))
    for n in range(batch):
        for o in range(cout):
            for y in range(out_h):
                for x_ in range(out_w):
                    total = 0.0
                    for c in range(cin):
                        for r in range(kh):
                            for s in range(kw):
                                total += (
                                    padded[n, c, y * strides[0] + r * dilation[0],
                                           x_ * strides[1] + s * dilation[1]]
                                    * w[o, c, r, s]
                                )
                    out[n, o, y, x_] = total
    return out


def im2col_conv(x, w, strides, padding, dilation):
    rows, (batch, out_h, out_w) = ref.im2col_nchw(x, w.shape[2:], strides, padding, dilation)
    assert rows.shape == (batch * out_h * out_w, int(np.prod(w.shape[1:])))
    flat = rows @ w.reshape(w.shape[0], -1).T
    return flat.reshape(batch, out_h, out_w, w.shape[0]).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("x_shape,w_shape,strides,padding,dilation", CONV_CASES)
def test_im2col_matches_loop_conv(x_shape, w_shape, strides, padding, dilation):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    expected = loop_conv2d(x, w, strides, padding, dilation)
    got = im2col_conv(x, w, strides, padding, dilation)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("x_shape,w_shape,strides,padding,dilation", CONV_CASES)
def test_im2col_matches_torch_conv2d(x_shape, w_shape, strides, padding, dilation):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    top, left, bottom, right = padding
    padded = torch.nn.functional.pad(torch.from_numpy(x), (left, right, top, bottom))
    expected = torch.nn.functional.conv2d(
        padded, torch.from_numpy(w), stride=strides, dilation=dilation
    ).numpy()
    got = im2col_conv(x, w, strides, padding, dilation)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_im2col_row_layout_is_cin_kh_kw():
    """Row ``(n, oh, ow)`` holds ``x[n, c, oh*s + r*d - top, ow*s + q*d - left]`` at ``c*kh*kw + r*kw + q``."""
    x = np.arange(2 * 3 * 6 * 5, dtype=np.float32).reshape(2, 3, 6, 5) + 1.0
    kernel, strides, padding, dilation = (2, 3), (2, 1), (1, 2, 0, 1), (2, 1)
    rows, (batch, out_h, out_w) = ref.im2col_nchw(x, kernel, strides, padding, dilation)
    assert rows.dtype == np.float32
    for n in range(batch):
        for oh in range(out_h):
            for ow in range(out_w):
                row = rows[(n * out_h + oh) * out_w + ow]
                for c in range(3):
                    for r in range(2):
                        for q in range(3):
                            h = oh * strides[0] + r * dilation[0] - padding[0]
                            w = ow * strides[1] + q * dilation[1] - padding[1]
                            inside = 0 <= h < 6 and 0 <= w < 5
                            want = x[n, c, h, w] if inside else 0.0
                            assert row[c * 6 + r * 3 + q] == want


def _centroid_rows(rng, rows, num_codebooks, num_centroids, sub_len):
    centroids = rng.standard_normal((num_codebooks, num_centroids, sub_len)).astype(np.float32)
    codes = rng.integers(0, num_centroids, (rows, num_codebooks))
    x = centroids[np.arange(num_codebooks)[None, :], codes].reshape(rows, -1)
    return x, centroids, codes


def test_build_tables_definition():
    rng = np.random.default_rng(3)
    centroids = rng.standard_normal((4, 5, 3)).astype(np.float32)
    weight = rng.standard_normal((12, 7)).astype(np.float32)
    tables = ref.build_tables(centroids, weight)
    assert tables.shape == (4, 5, 7)
    for c in range(4):
        for k in range(5):
            for n in range(7):
                want = sum(float(centroids[c, k, v]) * float(weight[c * 3 + v, n]) for v in range(3))
                assert tables[c, k, n] == pytest.approx(want, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("rows,num_codebooks,num_centroids,sub_len,out", [(37, 7, 16, 3, 13), (9, 5, 256, 4, 6)])
def test_tables_reproduce_matmul_on_centroid_rows(rows, num_codebooks, num_centroids, sub_len, out):
    rng = np.random.default_rng(4)
    x, centroids, codes = _centroid_rows(rng, rows, num_codebooks, num_centroids, sub_len)
    weight = rng.standard_normal((num_codebooks * sub_len, out)).astype(np.float32)
    exact = x.astype(np.float64) @ weight.astype(np.float64)

    # Rows made of centroids encode to exactly those centroids.
    np.testing.assert_array_equal(ref.encode(x, centroids), codes)

    # Real-valued tables: the gathered sum is the matmul (up to float64 rounding).
    tables = ref.build_tables(centroids, weight)
    gathered = tables[np.arange(num_codebooks)[None, :], codes].sum(axis=1)
    np.testing.assert_allclose(gathered, exact, rtol=1e-10, atol=1e-10)

    # INT8 tables: each of the C table entries is off by at most scale/2.
    tables_q, scale = ref.quantize_tables(tables)
    acc = ref.lookup_accumulate(codes, tables_q)
    assert acc.dtype == np.int32
    bound = num_codebooks * float(scale) / 2 * (1 + 1e-5)
    assert np.abs(acc * np.float64(scale) - exact).max() <= bound

    # The whole layer (with bias) stays within the same bound.
    bias = rng.standard_normal(out).astype(np.float32)
    layer = ref.lut_matmul(x, centroids, weight, bias)
    assert layer.dtype == np.float32 and layer.shape == (rows, out)
    assert np.abs(layer - (exact + bias)).max() <= bound + 1e-5


def test_lookup_accumulate_definition_and_extremes():
    rng = np.random.default_rng(5)
    num_codebooks, num_centroids, out = 300, 16, 5
    tables = rng.integers(-127, 128, (num_codebooks, num_centroids, out)).astype(np.int8)
    codes = rng.integers(0, num_centroids, (4, num_codebooks)).astype(np.uint8)
    acc = ref.lookup_accumulate(codes, tables)
    for m in range(4):
        for n in range(out):
            assert acc[m, n] == sum(int(tables[c, codes[m, c], n]) for c in range(num_codebooks))
    # Extreme tables: no int8 wrap-around in the sum.
    full = np.full((num_codebooks, num_centroids, out), 127, np.int8)
    assert (ref.lookup_accumulate(codes, full) == 127 * num_codebooks).all()
    assert (ref.lookup_accumulate(codes, -full) == -127 * num_codebooks).all()


@pytest.mark.parametrize("shift", [0.0, 3.0, -7.0])
def test_quantize_tables_round_trip(shift):
    rng = np.random.default_rng(6)
    tables = rng.standard_normal((6, 16, 9)) * 2.5 + shift
    tables_q, scale = ref.quantize_tables(tables)
    assert tables_q.dtype == np.int8 and isinstance(scale, np.float32)
    peak = np.abs(tables).max()
    assert float(scale) == pytest.approx(peak / 127, rel=1e-6)
    assert np.abs(tables_q.astype(np.int64)).max() == 127
    assert tables_q.min() >= -127
    err = np.abs(tables_q.astype(np.float64) * float(scale) - tables)
    assert err.max() <= float(scale) / 2 * (1 + 1e-5)
    # The largest-magnitude entry maps exactly to +-127 with the right sign.
    where = np.unravel_index(np.abs(tables).argmax(), tables.shape)
    assert tables_q[where] == 127 * np.sign(tables[where])


def test_quantize_tables_all_zero():
    tables_q, scale = ref.quantize_tables(np.zeros((2, 4, 3)))
    assert float(scale) == 1.0
    assert not tables_q.any()


def _brute_force_distances(rows, centroids):
    num_codebooks, num_centroids, sub_len = centroids.shape
    dist = np.empty((rows.shape[0], num_codebooks, num_centroids))
    for m in range(rows.shape[0]):
        for c in range(num_codebooks):
            sub = rows[m, c * sub_len : (c + 1) * sub_len].astype(np.float64)
            for k in range(num_centroids):
                diff = sub - centroids[c, k].astype(np.float64)
                dist[m, c, k] = np.sqrt((diff * diff).sum())
    return dist


@pytest.mark.parametrize("num_centroids", [2, 16, 256])
def test_encode_is_true_nearest_centroid(num_centroids):
    rng = np.random.default_rng(7)
    rows = rng.standard_normal((23, 5 * 3)).astype(np.float32) * 2 + 0.5
    centroids = rng.standard_normal((5, num_centroids, 3)).astype(np.float32)
    codes = ref.encode(rows, centroids)
    assert codes.dtype == np.uint8 and codes.shape == (23, 5)
    dist = _brute_force_distances(rows, centroids)
    sq = dist**2
    margin = ref.encode_margin(rows, centroids)
    # encode_margin is the gap of the two smallest squared Euclidean distances (||x||^2 cancels).
    two = np.sort(sq, axis=-1)[..., :2]
    np.testing.assert_allclose(margin, two[..., 1] - two[..., 0], rtol=1e-7, atol=1e-9)
    clear = margin > 1e-9
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(codes[clear], dist.argmin(-1)[clear])
    chosen = np.take_along_axis(dist, codes[..., None].astype(np.int64), -1)[..., 0]
    np.testing.assert_allclose(chosen, dist.min(-1), rtol=1e-9, atol=1e-9)


def test_encode_tie_takes_first_index():
    rng = np.random.default_rng(8)
    centroids = rng.standard_normal((3, 8, 4)).astype(np.float32)
    centroids[:, 6] = centroids[:, 2]  # duplicate centroid: exact tie
    rows = centroids[:, 2].reshape(1, -1)
    np.testing.assert_array_equal(ref.encode(rows, centroids), [[2, 2, 2]])
    np.testing.assert_array_equal(ref.encode_margin(rows, centroids), [[0.0, 0.0, 0.0]])


def test_lut_conv2d_matches_exact_conv_on_centroid_windows():
    """With a 1x1 kernel every window is one pixel, so centroid pixels give exact codes."""
    rng = np.random.default_rng(9)
    centroids = rng.standard_normal((2, 16, 2)).astype(np.float32)  # C_in = 4 = C*V
    codes = rng.integers(0, 16, (2 * 5 * 6, 2))
    pixels = centroids[np.arange(2)[None, :], codes].reshape(2, 5, 6, 4)
    x = pixels.transpose(0, 3, 1, 2).copy()
    weight = rng.standard_normal((7, 4, 1, 1)).astype(np.float32)
    bias = rng.standard_normal(7).astype(np.float32)
    got = ref.lut_conv2d(x, centroids, weight, bias)
    exact = loop_conv2d(x, weight, (1, 1), (0, 0, 0, 0), (1, 1)) + bias[None, :, None, None]
    tables_q, scale = ref.quantize_tables(ref.build_tables(centroids, weight.reshape(7, 4).T))
    assert got.shape == (2, 7, 5, 6)
    assert np.abs(got - exact).max() <= 2 * float(scale) / 2 * (1 + 1e-5) + 1e-5
