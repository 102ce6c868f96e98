"""Small torch models shared by the compile tests, and their NumPy reference forward: planned
layers through ``lut_tvm.reference``, the rest plain float math, with the samples that have an
encode near-tie on their path marked."""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lut_tvm import reference as ref
from lut_tvm.plan import TableQuant

# Tight: the compiled LUT layers must reproduce the reference bit-for-bit up to the float
# rounding of the dense layers around them.
LUT_TOL = dict(rtol=1e-5, atol=1e-5)
# Dense (unplanned) compiles against PyTorch / ONNX Runtime: float reassociation only.
DENSE_TOL = dict(rtol=1e-4, atol=1e-4)
# Encode near-ties: where a row's nearest and second-nearest (distinct) centroids are closer
# than this, float rounding upstream (TVM's vs NumPy's dense layers, float32 vs float64
# distances) may legitimately pick the other code, and the whole sample's output moves by a
# table step. Such samples are left out of the tight comparison; most samples must be clean.
# (Float32 distance error here is ~1e-8, so 1e-5 is conservative.)
MIN_ENCODE_MARGIN = 1e-5
MIN_CLEAN_FRACTION = 0.75


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
    """NumPy forward: planned layers through ``reference.lut_*``, the rest dense.

    Records, per sample (axis 0 of the input), the smallest encode margin on its path.
    """

    def __init__(self, model, plan):
        self.w = state_arrays(model)
        self.plans = {layer.name: layer for layer in plan.layers} if plan else {}
        self.used: list[str] = []
        self.margin = None  # [batch]

    def linear(self, h, name):
        weight, bias = self.w[f"{name}.weight"], self.w[f"{name}.bias"]
        if name not in self.plans:
            return h @ weight.T + bias
        lead, depth = h.shape[:-1], h.shape[-1]
        rows = h.reshape(-1, depth)
        cents = self.plans[name].centroids
        self._note(name, len(h), rows, cents)
        return ref.lut_matmul(rows, cents, weight.T, bias, self._granularity(name)).reshape(*lead, -1)

    def conv(self, h, name, stride, pad):
        weight, bias = self.w[f"{name}.weight"], self.w[f"{name}.bias"]
        if name not in self.plans:
            return F.conv2d(torch.from_numpy(h), torch.from_numpy(weight), torch.from_numpy(bias),
                            stride=stride, padding=pad).numpy()
        cents = self.plans[name].centroids
        rows, _ = ref.im2col_nchw(h, weight.shape[2:], (stride, stride), (pad,) * 4)
        self._note(name, len(h), rows, cents)
        return ref.lut_conv2d(h, cents, weight, bias, (stride, stride), (pad,) * 4,
                              granularity=self._granularity(name))

    def _granularity(self, name):
        return TableQuant(self.plans[name].table_quant).granularity

    def _note(self, name, batch, rows, cents):
        # rows are sample-major in both layouts (dense: [batch, ...lead], im2col: [batch, OH, OW])
        self.used.append(name)
        per_sample = ref.distinct_encode_margin(rows, cents).reshape(batch, -1).min(1)
        self.margin = per_sample if self.margin is None else np.minimum(self.margin, per_sample)

    def clean_samples(self):
        """Mask of the samples without an encode near-tie on their path."""
        return self.margin > MIN_ENCODE_MARGIN


def relu(a):
    return np.maximum(a, 0)


def mlp_reference(model, plan, x):
    r = RefForward(model, plan)
    h = relu(r.linear(x, "fc1"))
    h = relu(r.linear(h, "fc2"))
    return r.linear(h, "fc3"), r


def cnn_reference(model, plan, x):
    r = RefForward(model, plan)
    h = relu(r.conv(x, "conv1", 1, 1))
    h = relu(r.conv(h, "conv2", 2, 1))
    h = relu(r.conv(h, "conv3", 1, 0))
    h = relu(r.linear(h.reshape(len(h), -1), "fc1"))
    return r.linear(h, "fc2"), r


def dense3d_reference(model, plan, x):
    r = RefForward(model, plan)
    h = relu(r.linear(x, "proj"))
    return r.linear(h, "out"), r


def assert_matches_reference(y, expected, r):
    """Tight allclose on every sample without an encode near-tie (at least 75% of them)."""
    clean = r.clean_samples()
    assert clean.mean() >= MIN_CLEAN_FRACTION, (
        f"only {clean.sum()}/{clean.size} samples are free of encode near-ties: pick other data")
    np.testing.assert_allclose(y[clean], expected[clean], **LUT_TOL)
