"""PlannedRewritePass, the base of the four rewrites: a toy pass on it shows the contract (plan
lookup by fingerprint, the entry checked against the bound weight, a dense input as rows)."""

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.ir.transform import module_pass

from lut_tvm.errors import PlanError
from lut_tvm.exact.plan import ExactLayerPlan, ExactPlan
from lut_tvm.plan import LayerPlan, Plan
from lut_tvm.testing import relax_module
from lut_tvm.weights import LayerKind, fingerprint
from relay_passes.layer_sites import match_dense
from relay_passes.planned_rewriter import PlannedRewritePass, emit_on_rows

RNG = np.random.default_rng(41)
W1 = RNG.standard_normal((12, 8)).astype(np.float32)
W2 = RNG.standard_normal((8, 4)).astype(np.float32)


@module_pass(opt_level=0, name="DoubleDense")
class DoubleDense(PlannedRewritePass):
    """Toy rewrite: a planned dense layer becomes ``rows @ (2 W)`` on its input's rows."""

    match = staticmethod(match_dense)

    def emit(self, builder, call, site, layer):
        return emit_on_rows(builder, call, site, site.weight.shape[1], lambda data, shape: relax.op.matmul(
            data, relax.const(2 * site.weight)))


def _lut_layer(name, weight, **changes):
    fields = dict(name=name, kind=LayerKind.DENSE, weight_shape=weight.shape,
                  weight_fingerprint=fingerprint(weight),
                  centroids=np.zeros((weight.shape[0] // 4, 16, 4), np.float32))
    return LayerPlan(**{**fields, **changes})


def _two_dense(bb, x):
    return bb.emit(relax.op.matmul(bb.emit(relax.op.matmul(x, relax.const(W1))), relax.const(W2)))


def test_planned_layer_emitted_on_rows_unplanned_left():
    """Only the layer the plan names is replaced; rank-3 input goes through rows and back."""
    def expected_body(bb, x):
        rows = bb.emit(relax.op.reshape(x, (6, 12)))
        hidden = bb.emit(relax.op.reshape(bb.emit(relax.op.matmul(rows, relax.const(2 * W1))), (2, 3, 8)))
        return bb.emit(relax.op.matmul(hidden, relax.const(W2)))

    after = DoubleDense(Plan([_lut_layer("fc1", W1)]))(relax_module((2, 3, 12), _two_dense))
    tvm.ir.assert_structural_equal(after, relax_module((2, 3, 12), expected_body))


def test_rank_2_input_is_not_reshaped():
    after = DoubleDense(Plan([_lut_layer("fc2", W2)]))(relax_module((5, 12), _two_dense))
    expected = relax_module((5, 12), lambda bb, x: bb.emit(relax.op.matmul(
        bb.emit(relax.op.matmul(x, relax.const(W1))), relax.const(2 * W2))))
    tvm.ir.assert_structural_equal(after, expected)


def test_lut_entry_of_another_shape_is_named():
    plan = Plan([_lut_layer("fc1", W1, weight_shape=(6, 16))])
    with pytest.raises(PlanError, match=r"^plan layer 'fc1': field 'weight_shape' \[6, 16\] does not "
                                        r"match the model's weight \[12, 8\]$"):
        DoubleDense(plan)(relax_module((5, 12), _two_dense))


def test_exact_entry_of_another_kind_is_named():
    plan = ExactPlan([ExactLayerPlan.from_weight("fc1", LayerKind.DENSE, W1, 4, 0.1)])
    plan.layers[0].kind = LayerKind.CONV2D
    with pytest.raises(PlanError, match=r"^exact plan layer 'fc1': field 'kind' is conv2d, but it "
                                        r"binds a dense weight$"):
        DoubleDense(plan)(relax_module((5, 12), _two_dense))
