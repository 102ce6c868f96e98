"""TapLUTCodes: main also returns the codes of every LUT encode, through one extra output var each."""

import numpy as np
import tvm
from tvm import relax

from lut_tvm.plan import LayerPlan, Plan
from lut_tvm.testing import lut_calls, relax_module
from lut_tvm.weights import LayerKind, fingerprint
from relay_passes.rewrite_dense_to_lut import RewriteDenseToLUT
from relay_passes.tap_lut_codes import TapLUTCodes, encode_calls

RNG = np.random.default_rng(4)
W = RNG.standard_normal((12, 8)).astype(np.float32)
CENTROIDS = RNG.standard_normal((4, 16, 3)).astype(np.float32)


def _rewritten():
    plan = Plan([LayerPlan("fc", LayerKind.DENSE, W.shape, fingerprint(W), CENTROIDS)])
    return RewriteDenseToLUT(plan)(relax_module((5, 12), lambda bb, x: bb.emit(
        relax.op.nn.relu(bb.emit(relax.op.matmul(x, relax.const(W)))))))


def test_before_expected():
    """After the encode binding comes ``codes_0 = codes`` (an output var); main returns
    ``(result, codes_0)``; the rest of the block is as it was."""
    before = _rewritten()
    calls = dict(lut_calls(before))
    encode, lookup = calls["encode_dense"], calls["lookup_dense"]
    bb = relax.BlockBuilder()
    kernels = {call.args[0]: bb.add_func(before[call.args[0]], call.args[0].name_hint)
               for call in (encode, lookup)}
    x = relax.Var("x", relax.TensorType((5, 12), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            codes = bb.emit(relax.call_tir(kernels[encode.args[0]], [x, *encode.args[1].fields[1:]],
                                           encode.ty))
            tap = bb.emit_output(codes)
            looked = bb.emit(relax.call_tir(kernels[lookup.args[0]], [codes, *lookup.args[1].fields[1:]],
                                            lookup.ty))
            out = bb.emit_output(bb.emit(relax.op.nn.relu(looked)))
        bb.emit_func_output(relax.Tuple([out, tap]))
    tvm.ir.assert_structural_equal(TapLUTCodes()(before), bb.get())


def test_encode_calls_names_kinds_in_order():
    """``encode_calls``: the var and kind of each encode, and nothing for a module without LUTs."""
    found = encode_calls(_rewritten())
    assert [kind for _, kind in found] == ["encode_dense"]
    assert encode_calls(relax_module((5, 12), lambda bb, x: bb.emit(relax.op.nn.relu(x)))) == []
