"""Small torch models shared by the compile tests, and their NumPy reference forward: planned
layers through ``lut_tvm.reference`` (run with a compiled model's codes, each checked: see
``lut_tvm.testing.GivenCodes``), the rest plain float math."""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lut_tvm import reference as ref
from lut_tvm.plan import TableQuant
from lut_tvm.testing import GivenCodes

# Tight: given the same codes, the compiled LUT layers reproduce the reference bit-for-bit up to
# the float rounding of the dense layers around them.
LUT_TOL = dict(rtol=1e-5, atol=1e-5)
# Dense (unplanned) compiles against PyTorch / ONNX Runtime: float reassociation only.
DENSE_TOL = dict(rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- models / data


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 48)
        self.fc2 = nn.Linear(48, 32)
        self.fc3 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(16, 16, 1)
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


class Dense3D(nn.Module):
    """Linear layers on a [B, T, D] input: the frontends keep x 3-D, the LUT rewrite reshapes."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(32, 24)
        self.out = nn.Linear(24, 8)

    def forward(self, x):
        return self.out(torch.relu(self.proj(x)))


def seeded(cls, seed):
    torch.manual_seed(seed)
    return cls().eval()


def state_arrays(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def export_onnx(model, x, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(x),), str(path), dynamo=False)
    return path


def ort_out(path, x):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def torch_out(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


# --------------------------------------------------------------------------- reference forward


class RefForward:
    """NumPy forward: planned layers through ``reference`` (their free tables, if any, unless
    ``free_tables=False``), the rest dense. With ``codes`` (a compiled model's, forward order) the
    planned layers run with them, each checked (``GivenCodes``); else with the reference's own.
    """

    def __init__(self, model, plan, codes=None, free_tables=True):
        self.w = state_arrays(model)
        self.plans = {layer.name: layer for layer in plan.layers} if plan else {}
        self.given = None if codes is None else GivenCodes(codes)
        self.free_tables = free_tables
        self.used: list[str] = []

    def linear(self, h, name):
        weight, bias = self.w[f"{name}.weight"], self.w[f"{name}.bias"]
        if name not in self.plans:
            return h @ weight.T + bias
        lead, depth = h.shape[:-1], h.shape[-1]
        rows = h.reshape(-1, depth)
        self.used.append(name)
        return self._lut(name, rows, weight.reshape(len(weight), -1).T, bias).reshape(*lead, -1)

    def conv(self, h, name, stride, pad):
        weight, bias = self.w[f"{name}.weight"], self.w[f"{name}.bias"]
        if name not in self.plans:
            return F.conv2d(torch.from_numpy(h), torch.from_numpy(weight), torch.from_numpy(bias),
                            stride=stride, padding=pad).numpy()
        rows, (batch, out_h, out_w) = ref.im2col_nchw(h, weight.shape[2:], (stride, stride), (pad,) * 4)
        self.used.append(name)
        flat = self._lut(name, rows, weight.reshape(len(weight), -1).T, bias)
        return flat.reshape(batch, out_h, out_w, -1).transpose(0, 3, 1, 2)

    def _lut(self, name, rows, weight_dn, bias):
        layer = self.plans[name]
        tables = layer.tables if self.free_tables else None
        granularity = TableQuant(layer.table_quant).granularity
        if self.given is not None:
            return self.given.lut_matmul(rows, layer.centroids, weight_dn, bias, tables, f"LUT layer {name}",
                                         granularity)
        return ref.lut_output(ref.encode(rows, layer.centroids), layer.centroids, weight_dn, bias, granularity, tables)


def relu(a):
    return np.maximum(a, 0)


def mlp_reference(model, plan, x, codes=None, **kwargs):
    r = RefForward(model, plan, codes, **kwargs)
    h = relu(r.linear(x, "fc1"))
    h = relu(r.linear(h, "fc2"))
    return r.linear(h, "fc3"), r


def cnn_reference(model, plan, x, codes=None, **kwargs):
    r = RefForward(model, plan, codes, **kwargs)
    h = relu(r.conv(x, "conv1", 1, 1))
    h = relu(r.conv(h, "conv2", 2, 1))
    h = relu(r.conv(h, "conv3", 1, 0))
    h = relu(r.linear(h.reshape(len(h), -1), "fc1"))
    return r.linear(h, "fc2"), r


def dense3d_reference(model, plan, x, codes=None, **kwargs):
    r = RefForward(model, plan, codes, **kwargs)
    h = relu(r.linear(x, "proj"))
    return r.linear(h, "out"), r


def assert_matches_reference(y, tapped, reference, model, plan, x):
    """``y``, a compiled model's output on ``x``, equals ``reference(model, plan, x, codes)`` run
    with the codes of ``tapped`` (the same model and plan compiled by
    ``lut_tvm.testing.compile_with_codes``), every sample, tightly. Returns ``(expected, RefForward)``."""
    tapped_y, codes = tapped(x)
    np.testing.assert_array_equal(tapped_y, y)  # tapping the codes changes nothing else
    expected, r = reference(model, plan, x, codes)
    r.given.assert_all_used()
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, **LUT_TOL)
    return expected, r
