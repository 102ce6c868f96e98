"""RewriteDenseToInt8: a small MLP (from torch.export and from ONNX) whose plan puts Linears in
int8 compiles to the NumPy reference forward (``lut_tvm.int8_reference``), with the matmuls of
those layers gone and the LUT layers of the same plan still LUTs."""

import warnings

import numpy as np
import pytest
import tvm

import lut_tvm
from lut_tvm import int8_reference as ref
from lut_tvm.compiler import layer_sites, rewrite_module
from lut_tvm.frontends import import_model
from lut_tvm.plan import LayerPlan, Plan
from lut_tvm.reference import lut_matmul
from lut_tvm.target_features import host_features
from lut_tvm.targets import resolve_target
from lut_tvm.testing import op_calls
from schedules.attrs import LUT_KIND_ATTR, LutKind

torch = pytest.importorskip("torch")


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(37, 40)
        self.fc2 = torch.nn.Linear(40, 24)
        self.fc3 = torch.nn.Linear(24, 9)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def _model():
    torch.manual_seed(0)
    return MLP().eval()


def _params(model):
    return [(layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy())
            for layer in (model.fc1, model.fc2, model.fc3)]


def _int8_plan(model, x, names=("fc1", "fc2", "fc3"), act_bits=8):
    sites = layer_sites(import_model(model, (x,)))
    return Plan([LayerPlan.int8_dense(name, site.weight.shape, site.fingerprint, act_bits)
                 for name, site in zip(("fc1", "fc2", "fc3"), sites) if name in names])


def _reference(params, x, int8=(True, True, True), act_bits=8):
    h = x.reshape(-1, x.shape[-1])
    for index, ((weight, bias), quantized) in enumerate(zip(params, int8)):
        h = ref.int8_dense(h, weight, bias, act_bits) if quantized else h @ weight + bias
        if index < 2:
            h = np.maximum(h, np.float32(0.0))
    return h.reshape(*x.shape[:-1], -1)


def _kernel_kinds(mod):
    return sorted(str(func.attrs[LUT_KIND_ATTR]) for _, func in mod.functions_items()
                  if isinstance(func, tvm.tirx.PrimFunc) and func.attrs is not None and LUT_KIND_ATTR in func.attrs)


@pytest.mark.parametrize("rows", [1, 7, 128])
def test_torch_mlp_equals_reference(rows):
    model = _model()
    x = np.random.default_rng(rows).standard_normal((rows, 37)).astype(np.float32)
    compiled = lut_tvm.compile(model, _int8_plan(model, x), example_inputs=(x,), tuning_logs=False)
    y = compiled(x)
    np.testing.assert_allclose(y, _reference(_params(model), x), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        exact = model(torch.from_numpy(x)).numpy()
    cosine = (y * exact).sum() / np.linalg.norm(y) / np.linalg.norm(exact)
    assert cosine > 0.999 and not np.array_equal(y, exact)  # quantized, and close


@pytest.mark.parametrize("target,needs", [("x86-avx2", "avx2"), ({"kind": "llvm", "mcpu": "cascadelake"}, "avx512vnni")],
                         ids=["avx2", "vnni"])
def test_each_weight_layout_equals_reference(target, needs):
    """The weight is packed for the target compiled for (AVX2: 8 x 2 blocks, VNNI: 16 x 4)."""
    if not host_features().has(needs):
        pytest.skip(f"this CPU lacks {needs}")
    model = _model()
    x = np.random.default_rng(9).standard_normal((7, 37)).astype(np.float32)
    y = lut_tvm.compile(model, _int8_plan(model, x), target=target, example_inputs=(x,), tuning_logs=False)(x)
    np.testing.assert_allclose(y, _reference(_params(model), x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 7, 128])
def test_7bit_plan_equals_7bit_reference(rows):
    """A plan with ``act_bits`` 7 compiles (AVX2 where this CPU has it: the ``vpmaddubsw`` kernel) to
    the 7-bit reference, which is not the 8-bit one."""
    target = "x86-avx2" if host_features().has("avx2") else "native"
    model = _model()
    x = np.random.default_rng(rows + 50).standard_normal((rows, 37)).astype(np.float32)
    y = lut_tvm.compile(model, _int8_plan(model, x, act_bits=7), target=target, example_inputs=(x,),
                        tuning_logs=False)(x)
    expected = _reference(_params(model), x, act_bits=7)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(expected, _reference(_params(model), x), rtol=1e-5, atol=1e-5)


def test_onnx_mlp_with_leading_dims_equals_reference(tmp_path):
    model = _model()
    x = np.random.default_rng(5).standard_normal((2, 5, 37)).astype(np.float32)
    path = tmp_path / "mlp.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(x),), str(path), dynamo=False)
    plan = _int8_plan(str(path), x, names=("fc1", "fc3"))
    y = lut_tvm.compile(str(path), plan, example_inputs=(x,), tuning_logs=False)(x)
    np.testing.assert_allclose(y, _reference(_params(model), x, (True, False, True)), rtol=1e-5, atol=1e-5)


def test_rewrite_replaces_only_the_int8_layers_and_keeps_lut_layers():
    model = _model()
    x = np.random.default_rng(2).standard_normal((64, 37)).astype(np.float32)
    imported = import_model(model, (x,))
    sites = layer_sites(imported)
    centroids = np.random.default_rng(3).uniform(0, 1, (10, 16, 4)).astype(np.float32)
    lut = LayerPlan("fc2", sites[1].kind, sites[1].weight.shape, sites[1].fingerprint, centroids)
    plan = Plan([LayerPlan.int8_dense("fc1", sites[0].weight.shape, sites[0].fingerprint), lut])
    target = resolve_target("native")
    mod, bound = rewrite_module(imported, plan, target)
    assert bound == ["fc1", "fc2"]
    assert len(op_calls(mod, "relax.matmul")) == 1  # fc3 only
    kinds = _kernel_kinds(mod)
    assert kinds.count(LutKind.INT8_DENSE) == 1 and kinds.count(LutKind.INT8_QUANTIZE_ROWS) == 1
    assert any(kind not in (LutKind.INT8_DENSE, LutKind.INT8_QUANTIZE_ROWS) for kind in kinds)
    y = lut_tvm.compile(model, plan, example_inputs=(x,), tuning_logs=False)(x)
    (w1, b1), (w2, b2), (w3, b3) = _params(model)
    h = np.maximum(ref.int8_dense(x, w1, b1), 0)
    h = np.maximum(lut_matmul(h, centroids, w2, b2), 0)
    expected = h @ w3 + b3
    assert np.abs(y - expected).max() < 0.05 * np.abs(expected).max()


def test_unplanned_model_is_untouched():
    model = _model()
    x = np.zeros((3, 37), np.float32)
    imported = import_model(model, (x,))
    mod, bound = rewrite_module(imported, Plan([]), resolve_target("native"))
    assert bound == [] and len(op_calls(mod, "relax.matmul")) == 3 and not _kernel_kinds(mod)
