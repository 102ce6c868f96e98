"""TapLayerInputs: main returns the input of each distinct layer weight, the rest removed."""

import numpy as np
import tvm
from tvm import relax

from lut_tvm.testing import relax_module
from relay_passes.tap_layer_inputs import TapLayerInputs

RNG = np.random.default_rng(3)
W1 = RNG.standard_normal((12, 8)).astype(np.float32)
W2 = RNG.standard_normal((8, 3)).astype(np.float32)
WC = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32)


def _expected(params, bindings, taps):
    """``main(*params)`` without a dataflow block: ``bindings(bb, *params)`` returns the vars to
    pick ``taps`` (indices) from, the params first."""
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        values = [*params, *bindings(bb, *params)]
        bb.emit_func_output(relax.Tuple([values[i] for i in taps]))
    return bb.get()


def test_dense_chain_before_expected():
    """Two dense layers: the taps are x and the hidden tensor; the second matmul is dead."""
    before = relax_module((5, 12), lambda bb, x: bb.emit(relax.op.matmul(
        bb.emit(relax.op.matmul(x, relax.const(W1))), relax.const(W2))))
    x = relax.Var("x", relax.TensorType((5, 12), "float32"))
    expected = _expected([x], lambda bb, x: [bb.emit(relax.op.matmul(x, relax.const(W1)))], [0, 1])
    tvm.ir.assert_structural_equal(TapLayerInputs()(before), expected)


def test_shared_weight_tapped_once_before_expected():
    """A weight used twice is one layer: only the input of its first use is tapped."""
    before = relax_module((5, 12), lambda bb, x: bb.emit(relax.op.add(
        bb.emit(relax.op.matmul(x, relax.const(W1))),
        bb.emit(relax.op.matmul(bb.emit(relax.op.nn.relu(x)), relax.const(W1))))))
    x = relax.Var("x", relax.TensorType((5, 12), "float32"))
    tvm.ir.assert_structural_equal(TapLayerInputs()(before), _expected([x], lambda bb, x: [], [0]))


def test_conv2d_input_before_expected():
    """A conv2d's input (here a ReLU's output) is tapped like a dense one's."""
    before = relax_module((2, 2, 6, 6), lambda bb, x: bb.emit(relax.op.nn.conv2d(
        bb.emit(relax.op.nn.relu(x)), relax.const(WC), padding=(1, 1))))
    x = relax.Var("x", relax.TensorType((2, 2, 6, 6), "float32"))
    expected = _expected([x], lambda bb, x: [bb.emit(relax.op.nn.relu(x))], [1])
    tvm.ir.assert_structural_equal(TapLayerInputs()(before), expected)
