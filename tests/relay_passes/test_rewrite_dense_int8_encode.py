"""RewriteDenseToLUT with the int8 encode (``plan.EncodeMode.INT8``): a small MLP compiles to the NumPy
reference forward (``int8_encode_reference.encode_int8`` codes, INT8 tables), with the int8 row
encode in place of the float one, through the shuffle lookup and (1 row) the row-gather one."""

import numpy as np
import pytest
import tvm

import lut_tvm
from lut_tvm.compiler import layer_sites, rewrite_module
from lut_tvm.frontends import import_model
from lut_tvm.int8_encode_reference import encode_int8
from lut_tvm.plan import EncodeMode, LayerPlan, Plan
from lut_tvm.reference import lut_output
from lut_tvm.targets import resolve_target
from schedules.attrs import LUT_KIND_ATTR, LutKind

torch = pytest.importorskip("torch")


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(36, 40)
        self.fc2 = torch.nn.Linear(40, 24)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _case(rows):
    torch.manual_seed(0)
    model = MLP().eval()
    x = np.random.default_rng(rows).standard_normal((rows, 36)).astype(np.float32)
    sites = layer_sites(import_model(model, (x,)))
    rng = np.random.default_rng(1)
    cents = [rng.standard_normal((9, 16, 4)).astype(np.float32), rng.standard_normal((20, 16, 2)).astype(np.float32)]
    plan = Plan([LayerPlan(name, site.kind, site.weight.shape, site.fingerprint, c, encode=EncodeMode.INT8)
                 for name, site, c in zip(("fc1", "fc2"), sites, cents)])
    return model, x, plan, cents


def _reference(model, x, cents):
    h = x
    for index, (layer, centroids) in enumerate(zip((model.fc1, model.fc2), cents)):
        weight, bias = layer.weight.detach().numpy().T, layer.bias.detach().numpy()
        h = lut_output(encode_int8(h, centroids), centroids, weight, bias)
        if index == 0:
            h = np.maximum(h, np.float32(0.0))
    return h


@pytest.mark.parametrize("rows", [1, 7, 130])
def test_mlp_with_int8_encode_equals_reference(rows):
    model, x, plan, cents = _case(rows)
    y = lut_tvm.compile(model, plan, example_inputs=(x,), tuning_logs=False)(x)
    np.testing.assert_allclose(y, _reference(model, x, cents), rtol=1e-5, atol=1e-5)


def test_rewrite_emits_the_int8_encode():
    model, x, plan, _ = _case(7)
    mod, bound = rewrite_module(import_model(model, (x,)), plan, resolve_target("native"))
    assert bound == ["fc1", "fc2"]
    kinds = [str(f.attrs[LUT_KIND_ATTR]) for _, f in mod.functions_items()
             if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and LUT_KIND_ATTR in f.attrs]
    assert kinds.count(LutKind.ENCODE_DENSE_ROWS_INT8) == 2
    assert LutKind.ENCODE_DENSE_ROWS not in kinds and LutKind.ENCODE_DENSE not in kinds
