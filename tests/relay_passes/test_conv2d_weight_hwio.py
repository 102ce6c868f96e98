"""Conv2dWeightHWIO: constant OIHW conv weights become HWIO constants; results unchanged."""

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from lut_tvm._tvm_compat import constant_value
from lut_tvm.testing import op_calls, relax_module, run_relax as run
from relay_passes.conv2d_weight_hwio import Conv2dWeightHWIO


def conv_module(weight, groups=1, strides=(1, 1), padding=(1, 1, 1, 1), input_shape=(2, 4, 9, 7)):
    return relax_module(input_shape, lambda bb, x: bb.emit(relax.op.nn.conv2d(
        x, relax.const(weight), strides=strides, padding=padding, groups=groups)))


def conv_calls(mod):
    return op_calls(mod, "relax.nn.conv2d")


@pytest.mark.parametrize("strides,padding", [((1, 1), (1, 1, 1, 1)), ((2, 1), (0, 1, 2, 0))])
def test_weight_transposed_and_results_unchanged(strides, padding):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    x = rng.standard_normal((2, 4, 9, 7)).astype(np.float32)
    after = Conv2dWeightHWIO()(conv_module(weight, strides=strides, padding=padding))
    (call,) = conv_calls(after)
    assert call.attrs.kernel_layout == "HWIO"
    np.testing.assert_array_equal(constant_value(call.args[1]), weight.transpose(2, 3, 1, 0))
    top, left, bottom, right = padding
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    expected = torch.nn.functional.conv2d(torch.from_numpy(padded), torch.from_numpy(weight),
                                          stride=strides).numpy()
    np.testing.assert_allclose(run(after, x), expected, rtol=1e-4, atol=1e-4)


def test_grouped_conv_is_left_alone():
    weight = np.ones((4, 2, 3, 3), np.float32)
    before = conv_module(weight, groups=2)
    tvm.ir.assert_structural_equal(Conv2dWeightHWIO()(before), before)


def test_before_expected():
    """The conv2d with an OIHW constant becomes the same conv2d with the HWIO constant."""
    weight = np.random.default_rng(1).standard_normal((6, 4, 3, 3)).astype(np.float32)
    before = conv_module(weight, strides=(2, 1), padding=(0, 1, 2, 0))
    expected = relax_module((2, 4, 9, 7), lambda bb, x: bb.emit(relax.op.nn.conv2d(
        x, relax.const(np.ascontiguousarray(weight.transpose(2, 3, 1, 0))), strides=(2, 1),
        padding=(0, 1, 2, 0), kernel_layout="HWIO", out_layout="NCHW")))
    tvm.ir.assert_structural_equal(Conv2dWeightHWIO()(before), expected)
