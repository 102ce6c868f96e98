"""Expected modules of the rewrite and fusion tests: the LUT and exact kernels' calls written out.

Each ``emit_*`` emits, with a test's BlockBuilder, what a rewrite should leave for one layer: the
kernels from ``schedules`` and their constants from the NumPy reference (``lut_tvm.reference``,
``lut_tvm.exact.reference``), not from the passes' own builders.
"""

import numpy as np
from tvm import relax

from lut_tvm import reference as ref
from lut_tvm.exact.reference import output_scale, pack_exact, quantize_bias, quantize_weight
from lut_tvm.weights import LayerKind, as_dense_matrix
from schedules.exact_lut_compute import exact_lut_conv2d_func, exact_lut_dense_func
from schedules.lut_kernels import encode_conv2d_func, encode_dense_func, lookup_func_for


def call_kernel(bb, func, name, args, shape, dtype="float32"):
    """``bb.emit(call_tir(func added as name, args))``."""
    return bb.emit(relax.call_tir(bb.add_func(func, name), [*args],
                                  relax.TensorType(shape, dtype)))


def _lut_constants(layer, weight_dn, bias, out_features):
    centroids = layer.centroids
    norms = np.square(centroids.astype(np.float64)).sum(-1).astype(np.float32)
    tables_q, scale = ref.quantize_tables(ref.build_tables(centroids, weight_dn), "layer")
    bias = np.zeros(out_features, np.float32) if bias is None else bias.astype(np.float32)
    return ([relax.const(centroids), relax.const(norms)],
            [relax.const(tables_q), relax.const(np.full(out_features, scale, np.float32)),
             relax.const(bias)], tables_q.shape)


def emit_lut_dense(bb, x, layer, weight, rows, bias=None, relu=False):
    """Gather-form encode + lookup of a dense plan ``layer`` on ``x [rows, D]``: the lookup var."""
    cents = layer.centroids
    encode_consts, lookup_consts, table_shape = _lut_constants(layer, weight, bias, weight.shape[1])
    codes = call_kernel(bb, encode_dense_func(rows, *cents.shape), "lut_encode_dense",
                        [x, *encode_consts], (rows, cents.shape[0]), "uint8")
    lookup = lookup_func_for("lookup_dense", (rows, cents.shape[0]), table_shape, relu)
    return call_kernel(bb, lookup, "lut_lookup_dense" + ("_relu" if relu else ""),
                       [codes, *lookup_consts], (rows, weight.shape[1]))


def emit_lut_conv2d(bb, x, layer, weight, site, bias=None, relu=False):
    """Gather-form encode + lookup of a conv2d plan ``layer`` (``site``: input shape, geometry)."""
    input_shape, geometry = site
    cents = layer.centroids
    encode_consts, lookup_consts, table_shape = _lut_constants(
        layer, as_dense_matrix(LayerKind.CONV2D, weight), bias, weight.shape[0])
    out_h, out_w = geometry.output_hw(*input_shape[2:])
    codes_shape = (input_shape[0], out_h, out_w, cents.shape[0])
    codes = call_kernel(bb, encode_conv2d_func(input_shape, geometry, *cents.shape),
                        "lut_encode_conv2d", [x, *encode_consts], codes_shape, "uint8")
    out_shape = (input_shape[0], weight.shape[0], out_h, out_w)
    lookup = lookup_func_for("lookup_conv2d", codes_shape, table_shape, relu, out_shape)
    return call_kernel(bb, lookup, "lut_lookup_conv2d" + ("_relu" if relu else ""),
                       [codes, *lookup_consts], out_shape)


def emit_exact_gather(bb, x, layer, weight_dn, input_shape, geometry=None, bias=None):
    """The gather-form exact kernel of ``layer`` on ``x`` (rows ``[M, D]``, or NCHW with
    ``geometry``), its int32 bias ``quantize_bias(bias)``: the ``[M, N]`` var."""
    wq, _ = quantize_weight(weight_dn, layer.bits, layer.w_scale)
    packed = pack_exact(wq, layer.bits)
    depth, cols = wq.shape
    act = float(np.float32(layer.act_scale))
    out_scale = output_scale(layer.act_scale, layer.w_scale)
    if geometry is None:
        func = exact_lut_dense_func(input_shape[0], depth, layer.bits, packed.max_groups, cols, act)
        rows = input_shape[0]
    else:
        func = exact_lut_conv2d_func(input_shape, geometry, layer.bits, packed.max_groups, cols, act)
        rows = input_shape[0] * int(np.prod(geometry.output_hw(*input_shape[2:])))
    args = [x, relax.const(packed.group_index), relax.const(packed.patterns),
            relax.const(out_scale), relax.const(quantize_bias(bias, out_scale))]
    return call_kernel(bb, func, "exact_lut_dense", args, (rows, cols))
