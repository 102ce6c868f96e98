"""LutLinear / LutConv2d: the hard forward is the compiled kernels' arithmetic (checked against
``lut_tvm.reference``), the soft path has correct gradients, and ste = hard value + soft gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from lut_tvm import reference as ref
from lut_tvm.train import LutConv2d, LutLinear, lut_matmul, quantize_tables, set_mode
from lut_tvm.train.layers import build_tables, conv_rows, round_ste



def _linear(seed=0, d=32, n=12, v=8, k=16, temperature=0.7, dtype=torch.float32):
    torch.manual_seed(seed)
    dense = nn.Linear(d, n)
    cents = np.random.default_rng(seed).standard_normal((d // v, k, v)).astype(np.float32)
    return LutLinear.from_linear(dense, cents, temperature).to(dtype), dense


def _conv(seed=0, cin=3, cout=5, stride=1, padding=1, dilation=1, k=16, temperature=2.0):
    torch.manual_seed(seed)
    dense = nn.Conv2d(cin, cout, 3, stride=stride, padding=padding, dilation=dilation)
    cents = np.random.default_rng(seed).standard_normal((cin, k, 9)).astype(np.float32)
    return LutConv2d.from_conv(dense, cents, temperature), dense


def _np(t):
    return t.detach().numpy()


# ------------------------------------------------------------------ hard path == reference


def test_lut_linear_hard_forward_matches_reference():
    layer, _ = _linear()
    x = np.random.default_rng(1).standard_normal((40, 32)).astype(np.float32)
    got = _np(layer.eval()(torch.from_numpy(x)))
    want = ref.lut_matmul(x, _np(layer.centroids), _np(layer.weight).T, _np(layer.bias))
    np.testing.assert_array_equal(got, want)  # bit-for-bit: the same float32 ops as the kernels
    # ...and it is a LUT, not the dense layer
    assert np.abs(got - x @ _np(layer.weight).T - _np(layer.bias)).max() > 1e-2


def test_lut_linear_keeps_leading_dims():
    layer, _ = _linear()
    x = torch.randn(2, 5, 32)
    np.testing.assert_array_equal(_np(layer.eval()(x)), _np(layer(x.reshape(10, 32))).reshape(2, 5, 12))


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 1, 1), (1, 0, 2)])
def test_lut_conv2d_hard_forward_matches_reference(stride, padding, dilation):
    layer, _ = _conv(stride=stride, padding=padding, dilation=dilation)
    x = np.random.default_rng(2).standard_normal((2, 3, 9, 9)).astype(np.float32)
    got = _np(layer.eval()(torch.from_numpy(x)))
    want = ref.lut_conv2d(x, _np(layer.centroids), _np(layer.weight), _np(layer.bias),
                          (stride,) * 2, (padding,) * 4, (dilation,) * 2)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)  # bit-for-bit: the same float32 ops as the kernels


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 1, 1), (1, 0, 2), (2, 2, 2)])
def test_unfold_rows_match_reference_im2col(stride, padding, dilation):
    """torch's unfold flattens (c_in, kh, kw) like ``reference.im2col_nchw``: row for row."""
    x = np.random.default_rng(3).standard_normal((2, 4, 7, 6)).astype(np.float32)
    rows, geometry = conv_rows(torch.from_numpy(x), (3, 2), (stride,) * 2, (padding,) * 2, (dilation,) * 2)
    want, want_geometry = ref.im2col_nchw(x, (3, 2), (stride,) * 2, (padding,) * 4, (dilation,) * 2)
    assert geometry == want_geometry
    np.testing.assert_array_equal(_np(rows), want)


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
@pytest.mark.parametrize("padding, torch_padding", [((1, 0, 2, 1), (0, 1, 1, 2)), ("same", "same"),
                                                   ("valid", "valid"), (2, (2, 2, 2, 2))])
def test_unfold_rows_match_reference_im2col_any_padding(padding, torch_padding):
    """(top, left, bottom, right), torch's string paddings ('same' with an even kernel height pads
    the bottom) and an int: the same rows as the reference, and rows . W is torch's conv2d."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 6, 7)).astype(np.float32)
    rows, geometry = conv_rows(torch.from_numpy(x), (2, 3), 1, padding, 1)
    want, want_geometry = ref.im2col_nchw(x, (2, 3), 1, padding, 1)
    assert geometry == want_geometry
    np.testing.assert_array_equal(_np(rows), want)
    weight = torch.from_numpy(rng.standard_normal((5, 3, 2, 3)).astype(np.float32))
    if isinstance(torch_padding, str):
        conv = torch.nn.functional.conv2d(torch.from_numpy(x), weight, padding=torch_padding)
    else:  # F.pad takes (left, right, top, bottom)
        conv = torch.nn.functional.conv2d(torch.nn.functional.pad(torch.from_numpy(x), torch_padding), weight)
    got = (rows @ weight.reshape(5, -1).T).reshape(*geometry, 5).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, conv, rtol=1e-5, atol=1e-5)


def test_quantize_tables_equals_reference_exactly():
    rng = np.random.default_rng(4)
    cases = [
        rng.standard_normal((4, 16, 10)) * 3,
        # exact halves after scaling (scale = 1): round half to even, like np.rint
        np.array([127.0, 0.5, 1.5, 2.5, -0.5, -2.5, 126.5, -126.5]).reshape(1, 2, 4),
        np.zeros((2, 16, 3)),
    ]
    for tables in cases:
        want_q, want_scale = ref.quantize_tables(tables)
        levels, scale = quantize_tables(torch.from_numpy(tables))
        np.testing.assert_array_equal(_np(levels).astype(np.int8), want_q)
        assert np.array_equal(_np(levels), want_q.astype(np.float64))  # integer-valued, in range
        assert np.float32(scale.item()) == want_scale


def test_layer_tables_equal_the_compilers():
    """The layer's INT8 tables are ``reference.quantize_tables(reference.build_tables(P, W_dn))``
    (what the compile pass builds) for conv layers too, whose ``W_dn`` is a reshaped view."""
    layer, _ = _conv(cin=6, cout=7)
    w_dn = _np(layer.weight).reshape(7, -1).T
    want_q, want_scale = ref.quantize_tables(ref.build_tables(_np(layer.centroids), w_dn))
    levels, scale = quantize_tables(build_tables(layer.centroids.double(), layer.weight_dn().double()))
    np.testing.assert_array_equal(_np(levels).astype(np.int8), want_q)
    assert np.float32(scale.item()) == want_scale


# ------------------------------------------------------------------ soft path / gradients


def test_soft_path_gradcheck_linear():
    torch.manual_seed(5)
    x = torch.randn(6, 12, dtype=torch.float64, requires_grad=True)
    cents = torch.randn(3, 4, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(12, 5, dtype=torch.float64, requires_grad=True)
    log_t = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: lut_matmul(*a, mode="soft"), (x, cents, weight, log_t))


def test_soft_path_gradcheck_conv_module():
    layer, _ = _conv(cin=2, cout=3, k=4)
    layer = layer.double().train()
    layer.mode = "soft"
    names = ["weight", "bias", "centroids", "log_temperature"]
    params = tuple(getattr(layer, n).detach().clone().requires_grad_() for n in names)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)

    def run(x, *p):
        return functional_call(layer, dict(zip(names, p)), (x,))

    assert torch.autograd.gradcheck(run, (x, *params))


@pytest.mark.parametrize("make", [_linear, _conv])
def test_ste_forward_is_hard_and_gradient_is_soft(make):
    layer, _ = make()
    x = torch.randn(4, 32) if make is _linear else torch.randn(2, 3, 6, 6)
    layer.train()
    out = layer(x)
    set_mode(layer, "hard")
    with torch.no_grad():
        hard = layer(x)
    assert torch.equal(out, hard), "ste forward must be bit-identical to the hard path"
    probe = torch.randn_like(out)
    grads = torch.autograd.grad((out * probe).sum(), list(layer.parameters()))
    for name, grad in zip(dict(layer.named_parameters()), grads):
        assert grad is not None and grad.abs().sum() > 0, f"no gradient reaches {name}"
    set_mode(layer, "soft")
    soft = layer(x)
    assert not torch.allclose(soft, hard)  # the soft value differs...
    soft_grads = torch.autograd.grad((soft * probe).sum(), list(layer.parameters()))
    for grad, want in zip(grads, soft_grads):  # ...but its gradient is the ste gradient
        torch.testing.assert_close(grad, want)


def test_hard_mode_passes_gradients_through_the_rounding():
    """Straight-through quantization: d(hard)/dT is the one-hot assignment (scale cancels)."""
    layer, _ = _linear()
    layer.train()
    layer.mode = "hard"
    x = torch.randn(8, 32)
    out = layer(x)
    probe = torch.randn_like(out)
    grad_w, grad_p = torch.autograd.grad((out * probe).sum(), [layer.weight, layer.centroids])
    # the same gradient without quantization: one-hot (fixed codes) @ real tables
    codes = ref.encode(_np(x), _np(layer.centroids))
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(codes).long(), 16).float().reshape(8, -1)
    real = one_hot @ build_tables(layer.centroids, layer.weight_dn()).reshape(-1, 12)
    want_w, want_p = torch.autograd.grad((real * probe).sum(), [layer.weight, layer.centroids])
    torch.testing.assert_close(grad_w, want_w, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_p, want_p, rtol=1e-4, atol=1e-5)
    assert layer.log_temperature.grad is None


def test_round_ste_rounds_half_to_even_with_identity_gradient():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, 0.4], requires_grad=True)
    y = round_ste(x)
    np.testing.assert_array_equal(_np(y), np.rint(_np(x)))
    y.sum().backward()
    np.testing.assert_array_equal(_np(x.grad), np.ones(5))


def test_eval_and_no_grad_skip_the_soft_path():
    layer, _ = _linear()
    assert layer.train().active_mode() == "ste"
    with torch.no_grad():
        assert layer.active_mode() == "hard"
    assert layer.eval().active_mode() == "hard"
    out = layer(torch.randn(3, 32))
    out.sum().backward()
    assert layer.log_temperature.grad is None  # the temperature only acts through the soft path


def test_temperature_is_positive_and_learned_in_log_space():
    layer, _ = _linear(temperature=0.25)
    assert float(layer.temperature) == pytest.approx(0.25)
    with torch.no_grad():
        layer.log_temperature.fill_(-50.0)
    assert float(layer.temperature) > 0


def test_to_dense_copies_weights_and_geometry():
    layer, dense = _conv(stride=2, padding=1)
    back = layer.to_dense()
    assert isinstance(back, nn.Conv2d) and back.stride == (2, 2) and back.padding == (1, 1)
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(back(x), dense(x))
    lin, dense_lin = _linear()
    torch.testing.assert_close(lin.to_dense()(torch.randn(2, 32) * 0 + 1), dense_lin(torch.ones(2, 32)))


def test_bad_centroids_and_temperature_are_refused():
    dense = nn.Linear(32, 4)
    with pytest.raises(ValueError, match="C\\*V = D = 32"):
        LutLinear.from_linear(dense, np.zeros((3, 16, 8), np.float32))
    with pytest.raises(ValueError, match="temperature"):
        LutLinear.from_linear(dense, np.zeros((4, 16, 8), np.float32), temperature=0.0)
    with pytest.raises(ValueError, match="not zero padding"):
        LutConv2d.from_conv(nn.Conv2d(4, 4, 3, padding_mode="reflect"), np.zeros((4, 16, 9), np.float32))
