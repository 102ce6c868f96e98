"""Helpers for tests of lut_tvm's passes and kernels: build, inspect and run small Relax modules, and
check compiled LUT models exactly against the NumPy reference run with their own codes."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir import Op

from schedules.attrs import LUT_KIND_ATTR, LutKind

from . import reference as ref

# How a test skipped for want of the emulated ARM64 device starts its reason (the deploy tests'
# fixtures skip so; tests/conftest.py counts them in one summary line).
ARM64_SKIP_PREFIX = "ARM64 device: "


def relax_module(input_shape, body, dtype: str = "float32") -> tvm.IRModule:
    """``main(x)`` whose dataflow block is ``body(bb, x)`` (its result is main's output)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(input_shape, dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(body(bb, x))
        bb.emit_func_output(out)
    return bb.get()


def run_relax(mod: tvm.IRModule, *inputs, target="llvm") -> np.ndarray:
    """Compile ``mod`` and run ``main`` on NumPy inputs; returns its (single) output."""
    vm = relax.VirtualMachine(tvm.compile(mod, target), tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in inputs]).numpy()


def op_calls(mod: tvm.IRModule, name: str) -> list:
    """Every call of the Relax operator ``name`` in ``main``."""
    calls = []
    relax.analysis.post_order_visit(
        mod["main"].body,
        lambda e: calls.append(e)
        if isinstance(e, relax.Call) and isinstance(e.op, Op) and e.op.name == name else None,
    )
    return calls


def lut_calls(mod: tvm.IRModule) -> list:
    """``(kind, call)`` of every call_tir in ``main`` to a PrimFunc tagged with a LUT kind."""
    found = []
    for call in op_calls(mod, "relax.call_tir"):
        func = mod[call.args[0]]
        if func.attrs is not None and LUT_KIND_ATTR in func.attrs:
            found.append((str(func.attrs[LUT_KIND_ATTR]), call))
    return found


def loop_kinds(func) -> list:
    """The ForKind of every loop in a PrimFunc (parallel, vectorized, ...)."""
    from tvm import tirx  # pylint: disable=import-outside-toplevel

    from ._tvm_compat import walk_tir  # pylint: disable=import-outside-toplevel

    return [node.kind for node in walk_tir(func.body) if isinstance(node, tirx.For)]


# --------------------------------------------------------------------------- exactness given codes
#
# A LUT layer is exact given its codes: the output is a sum of INT8 table entries. Its codes are
# not: at a near-tie (two centroids almost equally near) float rounding upstream may pick either.
# So the exactness tests tap the compiled model's codes (TapLUTCodes), check each against the
# reference's nearest centroid, and run the NumPy reference forward *with those codes*: a test
# never drops a sample, and a wrong code away from a near-tie or a wrong table entry still fails.

# A code is accepted when its distance is within this of the nearest one, relative to the size of
# the numbers the distances are made of (||x||^2 + max ||P||^2). Float32 rounding, with that of the
# layers upstream, moves a distance by about 1e-6 of that; typical margins are ~1e-2 and larger.
NEAR_TIE = 1e-4
# Kernel tests feed the kernel and the reference the same float32 data: only the float32 distance
# itself rounds (about V float32 epsilons of the size, ~2e-6 for V = 40), so fixed data whose
# margins all exceed this compares whole outputs exactly (``assert_no_near_ties``).
SAME_INPUT_NEAR_TIE = 1e-5
_CODEBOOK_MAJOR = (LutKind.ENCODE_DENSE_ROWS, LutKind.ENCODE_CONV2D_ROWS,  # encodes writing codes [C, M]
                   LutKind.ENCODE_DENSE_ROWS_INT8)


class TappedModel:
    """A model compiled with ``TapLUTCodes``: ``compiled`` (a CompiledModel whose ``main`` returns
    the result then the codes of each LUT layer) and ``kinds`` (each encode's LutKind)."""

    def __init__(self, compiled, kinds: list[str]):
        self.compiled, self.kinds = compiled, kinds

    def split(self, outputs) -> tuple[np.ndarray, list[np.ndarray]]:
        """``(result, [codes [M, C] per LUT layer, in forward order])`` from ``main``'s outputs."""
        result = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
        codes = result[len(result) - len(self.kinds):]
        result = result[: len(result) - len(self.kinds)]
        assert len(result) == 1, f"expected one model output besides the codes, got {len(result)}"
        rows = [c.T if kind in _CODEBOOK_MAJOR else c.reshape(-1, c.shape[-1])
                for c, kind in zip(codes, self.kinds)]
        return result[0], [np.ascontiguousarray(c) for c in rows]

    def __call__(self, *inputs) -> tuple[np.ndarray, list[np.ndarray]]:
        """Run locally: ``(result, codes)`` as ``split`` returns them."""
        return self.split(self.compiled(*inputs))


def compile_with_codes(model, plan, target="native", example_inputs=None, *, tuning_logs=True,
                       fast_math: bool = True) -> TappedModel:
    """``lut_tvm.compile`` with ``TapLUTCodes`` after the LUT rewrite (LUT-NN plans): the same
    stages (``compiler.compile_imported``), so the tapped model computes what ``compile``'s does."""
    # pylint: disable=import-outside-toplevel
    from relay_passes.tap_lut_codes import TapLUTCodes, encode_calls

    from .compiler import checked_tuning_log_dir, compile_imported
    from .frontends import import_model
    from .targets import resolve_target

    kinds: list[str] = []

    @tvm.transform.module_pass(opt_level=0, name="RecordEncodeKinds")
    def record_kinds(mod, _ctx):
        kinds.extend(kind for _, kind in encode_calls(mod))
        return mod

    tvm_target = resolve_target(target)
    compiled = compile_imported(import_model(model, example_inputs), plan, tvm_target,
                                log_dir=checked_tuning_log_dir(tuning_logs), fast_math=fast_math,
                                after_rewrite=[record_kinds, TapLUTCodes()])
    return TappedModel(compiled, kinds)


def _distance_size(rows: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``||x||^2 + max_k ||P_k||^2`` per row and codebook ``[M, C]``: the size of the numbers an
    encode distance is made of, which its float32 rounding error is proportional to."""
    num_codebooks, _, sub_len = centroids.shape
    subs = rows.reshape(len(rows), num_codebooks, sub_len).astype(np.float64)
    norms = (centroids.astype(np.float64) ** 2).sum(-1).max(-1)  # [C]
    return np.maximum((subs**2).sum(-1) + norms[None], 1e-30)


def relative_encode_margin(rows: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Gap between the two nearest centroids' distances ``[M, C]``, relative to ``_distance_size``."""
    return ref.encode_margin(rows, centroids) / _distance_size(rows, centroids)


def assert_no_near_ties(rows: np.ndarray, centroids: np.ndarray, where: str = "") -> None:
    """Assert fixed kernel-test data has no encode near-tie (``relative_encode_margin >
    SAME_INPUT_NEAR_TIE``): any CPU's float32 encode of these same rows then picks the reference's
    codes, and whole layer outputs compare tightly."""
    margin = relative_encode_margin(rows, centroids)
    assert margin.min() > SAME_INPUT_NEAR_TIE, (
        f"{where + ': ' if where else ''}the test data has "
        f"{int((margin <= SAME_INPUT_NEAR_TIE).sum())} encode near-ties: pick other data")


def check_codes(codes: np.ndarray, rows: np.ndarray, centroids: np.ndarray, where: str = "") -> int:
    """Assert ``codes [M, C]`` pick, for ``rows [M, C*V]``, the nearest centroid of
    ``centroids [C, K, V]``, or one as near up to ``NEAR_TIE`` (relative to ``_distance_size``:
    a near-tie, where either code is right). Returns how many codes had a near-tie."""
    num_codebooks, num_centroids, _ = centroids.shape
    where = f"{where}: " if where else ""
    assert codes.shape == (len(rows), num_codebooks), \
        f"{where}codes {codes.shape} are not [M, C] = {(len(rows), num_codebooks)}"
    assert int(codes.max(initial=0)) < num_centroids, f"{where}code {codes.max()} >= K = {num_centroids}"
    dist = ref.centroid_distances(rows, centroids)  # [M, C, K]
    size = _distance_size(rows, centroids)
    picked = codes.astype(np.int64)
    slack = (np.take_along_axis(dist, picked[..., None], -1)[..., 0] - dist.min(-1)) / size
    wrong = np.argwhere(slack > NEAR_TIE)
    if len(wrong):
        row, book = wrong[0]
        raise AssertionError(
            f"{where}{len(wrong)} of {codes.size} codes are not the nearest centroid, e.g. row {row} "
            f"codebook {book}: code {picked[row, book]}, nearest {dist[row, book].argmin()} "
            f"(relative distance gap {slack[row, book]:.2e} > {NEAR_TIE})")
    return int((ref.encode_margin(rows, centroids) / size <= NEAR_TIE).sum())


class GivenCodes:
    """The NumPy reference of LUT layers run with a compiled model's codes: each layer takes the
    next codes (forward order), checks them (``check_codes``) and sums the INT8 table entries they
    pick exactly as ``reference.lut_matmul`` does."""

    def __init__(self, codes: list[np.ndarray]):
        self.codes = list(codes)
        self.used = 0
        self.near_ties = 0

    def lut_matmul(self, rows, centroids, weight_dn, bias=None, tables=None, where: str = "",
                   granularity: str = "layer"):
        """A LUT dense layer on ``rows [M, D]`` (``tables [C, K, N]``, if given, replace ``P.W``;
        ``granularity`` of the table scale as in ``reference.quantize_tables``)."""
        assert self.used < len(self.codes), f"{where}: the compiled model has only {len(self.codes)} LUT layers"
        codes = self.codes[self.used]
        self.used += 1
        self.near_ties += check_codes(codes, rows, centroids, where or f"LUT layer {self.used - 1}")
        return ref.lut_output(codes, centroids, weight_dn, bias, granularity, tables)

    def lut_conv2d(self, x, centroids, weight_oihw, bias=None, strides=(1, 1), padding=(0, 0, 0, 0),
                   tables=None, where: str = "", granularity: str = "layer"):
        """A LUT conv layer on NCHW ``x`` through im2col; returns NCHW."""
        rows, (batch, out_h, out_w) = ref.im2col_nchw(x, weight_oihw.shape[2:], strides, padding)
        flat = self.lut_matmul(rows, centroids, weight_oihw.reshape(len(weight_oihw), -1).T, bias,
                               tables, where, granularity)
        return flat.reshape(batch, out_h, out_w, -1).transpose(0, 3, 1, 2)

    def assert_all_used(self):
        assert self.used == len(self.codes), \
            f"the reference ran {self.used} LUT layers, the compiled model has {len(self.codes)}"


def forward_given_codes(lut_model, x: np.ndarray, codes: list[np.ndarray]) -> np.ndarray:
    """``lut_model``'s forward (a ``lut_tvm.train`` model) with each LUT layer (Linear, Conv2d or
    Conv1d) run by the NumPy reference with the compiled model's ``codes`` (``GivenCodes``: each
    code is checked against the nearest centroid of the layer's actual input, near-ties aside)."""
    import torch  # pylint: disable=import-outside-toplevel

    from .plan import TableQuant  # pylint: disable=import-outside-toplevel
    from .train import lut_layers  # pylint: disable=import-outside-toplevel
    from .train.conv1d import LutConv1d  # pylint: disable=import-outside-toplevel
    from .train.layers import LutConv2d  # pylint: disable=import-outside-toplevel

    given = GivenCodes(codes)

    def hook(layer, args, _out):
        inp = args[0].detach().numpy()
        cents = layer.centroids.detach().numpy()
        bias = None if layer.bias is None else layer.bias.detach().numpy()
        tables = None if getattr(layer, "tables", None) is None else layer.tables.detach().numpy()
        granularity = TableQuant(layer.table_quant).granularity
        where = f"LUT {type(layer).__name__} {layer.extra_repr()}"
        if isinstance(layer, LutConv2d):
            (ph, pw) = layer.padding
            out = given.lut_conv2d(inp, cents, layer.weight.detach().numpy(), bias, layer.stride, (ph, pw, ph, pw),
                                   tables, where, granularity)
        elif isinstance(layer, LutConv1d):
            weight = layer.canonical_weight()
            rows, (batch, _, out_len) = ref.im2col_nchw(
                inp[:, :, None, :], weight.shape[2:], (1, layer.stride), (0, layer.padding, 0, layer.padding),
                (1, layer.dilation))
            out = given.lut_matmul(rows, cents, weight.reshape(len(weight), -1).T, bias, tables, where, granularity)
            out = out.reshape(batch, out_len, -1).transpose(0, 2, 1).copy()
        else:
            out = given.lut_matmul(inp.reshape(-1, inp.shape[-1]), cents, layer.weight.detach().numpy().T, bias,
                                   tables, where, granularity)
            out = out.reshape(*inp.shape[:-1], -1)
        return torch.from_numpy(out)

    handles = [layer.register_forward_hook(hook) for _, layer in lut_layers(lut_model)]
    try:
        with torch.no_grad():
            y = lut_model.eval()(torch.from_numpy(x)).numpy()
    finally:
        for handle in handles:
            handle.remove()
    given.assert_all_used()
    return y


def random_low_bit_weights(rng: np.random.Generator, bits, shape) -> tuple[np.ndarray, int]:
    """``(int8 weights, plan bits)`` drawn uniformly for an exact layer of ``bits``: 1 ({-1, +1}),
    ``"ternary"`` ({-1, 0, +1}, 2-bit plan) or b (the signed b-bit range)."""
    if bits == "ternary":
        return rng.integers(-1, 2, shape).astype(np.int8), 2
    if bits == 1:
        return np.where(rng.random(shape) < 0.5, -1, 1).astype(np.int8), 1
    return rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), shape).astype(np.int8), bits
