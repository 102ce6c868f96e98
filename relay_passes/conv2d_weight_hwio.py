"""Conv2dWeightHWIO: store the constant weights of NCHW conv2ds as HWIO, transposed at compile time.

Before: ``relax.nn.conv2d(x, w)`` with data/out layout NCHW, kernel layout OIHW, groups 1 and a
constant ``w`` (what the torch and ONNX frontends emit; run after the LUT rewrite passes, which
match conv2d weights in OIHW). After: the same conv2d with ``kernel_layout="HWIO"`` and the
constant already transposed to ``[kh, kw, C_in, C_out]``, so that the conv2d schedule rule
(schedules/rules/dense_ops/conv2d_nchw.py) loads a contiguous vector of output channels per
(ry, rx, rc) without repacking the weight on every call. Data and output stay NCHW; convs with
a non-constant weight, groups, or other layouts are left unchanged.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.ir import IRModule
from tvm.ir.transform import PassContext, module_pass
from tvm.relax.expr_functor import PyExprMutator, mutator

from lut_tvm._tvm_compat import constant_value

from .layer_sites import is_constant_nchw_conv2d
from .planned_rewriter import rewrite_relax_functions


@mutator
class _WeightToHWIO(PyExprMutator):
    def __init__(self, mod: IRModule):
        super().__init__(mod)

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        if not is_constant_nchw_conv2d(call) or int(call.attrs.groups) != 1:
            return call
        attrs = call.attrs
        data, weight = call.args
        value = constant_value(weight)
        if value.ndim != 4 or value.dtype != np.float32:
            return call
        hwio = relax.const(np.ascontiguousarray(value.transpose(2, 3, 1, 0)))
        return relax.op.nn.conv2d(
            data,
            hwio,
            strides=[int(s) for s in attrs.strides],
            padding=[int(p) for p in attrs.padding],
            dilation=[int(d) for d in attrs.dilation],
            groups=1,
            data_layout="NCHW",
            kernel_layout="HWIO",
            out_layout="NCHW",
            out_dtype=attrs.out_dtype,
        )


@module_pass(opt_level=0, name="Conv2dWeightHWIO")
class Conv2dWeightHWIO:
    """Transpose constant OIHW conv2d weights of NCHW conv2ds to HWIO."""

    def transform_module(self, mod: IRModule, _ctx: PassContext) -> IRModule:
        return rewrite_relax_functions(mod, _WeightToHWIO(mod))
