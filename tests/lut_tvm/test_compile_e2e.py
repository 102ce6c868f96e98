"""End to end: k-means plan -> lut_tvm.compile (torch and ONNX frontends) -> run, checked
against an independent NumPy forward built from ``lut_tvm.reference`` (LUT layers) and plain
NumPy/torch (dense layers), and the unplanned model against PyTorch and ONNX Runtime.

One plan is made per model from the torch module and reused for the ONNX import, so a pass
also shows that plans bind by weight fingerprint across frontends.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lut_tvm
from lut_tvm import reference as ref

pytestmark = [
    # k-means on a codebook whose sub-vectors are all equal (a dead ReLU channel): benign
    pytest.mark.filterwarnings("ignore:Number of distinct clusters:sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.filterwarnings("ignore:Renaming name:UserWarning"),
]

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


def _seeded(cls, seed):
    torch.manual_seed(seed)
    return cls().eval()


def _state(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's 8x8 digits, scaled to [0, 1], float32 [1797, 8, 8]."""
    from sklearn.datasets import load_digits

    return (load_digits().images / 16.0).astype(np.float32)


def _export_onnx(model, x, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(x),), str(path), dynamo=False)
    return path


def _ort(path, x):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _torch_out(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


# --------------------------------------------------------------------------- reference forward


class RefForward:
    """NumPy forward: planned layers through ``reference.lut_*``, the rest dense.

    Records, per sample (axis 0 of the input), the smallest encode margin on its path.
    """

    def __init__(self, model, plan):
        self.w = _state(model)
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
        return ref.lut_matmul(rows, cents, weight.T, bias).reshape(*lead, -1)

    def conv(self, h, name, stride, pad):
        weight, bias = self.w[f"{name}.weight"], self.w[f"{name}.bias"]
        if name not in self.plans:
            return F.conv2d(torch.from_numpy(h), torch.from_numpy(weight), torch.from_numpy(bias),
                            stride=stride, padding=pad).numpy()
        cents = self.plans[name].centroids
        rows, _ = ref.im2col_nchw(h, weight.shape[2:], (stride, stride), (pad,) * 4)
        self._note(name, len(h), rows, cents)
        return ref.lut_conv2d(h, cents, weight, bias, (stride, stride), (pad,) * 4)

    def _note(self, name, batch, rows, cents):
        # rows are sample-major in both layouts (dense: [batch, ...lead], im2col: [batch, OH, OW])
        self.used.append(name)
        per_sample = encode_margin(rows, cents).reshape(batch, -1).min(1)
        self.margin = per_sample if self.margin is None else np.minimum(self.margin, per_sample)

    def clean_samples(self):
        """Mask of the samples without an encode near-tie on their path."""
        return self.margin > MIN_ENCODE_MARGIN


def encode_margin(rows, centroids):
    """Per row and codebook ``[M, C]``: the gap between the nearest centroid's distance and the
    nearest *different* centroid's.

    ``reference.encode_margin`` counts ties between identical centroids (k-means duplicates a
    centroid when a codebook's sub-vectors take fewer than K values, e.g. a dead ReLU channel);
    those ties pick the same table row whichever way they go, so they are left out here.
    """
    dist = ref.centroid_distances(rows, centroids)  # [M, C, K]
    best = dist.argmin(-1)
    num_codebooks = centroids.shape[0]
    best_vec = centroids[np.arange(num_codebooks)[None, :], best]  # [M, C, V]
    same = (centroids[None] == best_vec[:, :, None, :]).all(-1)  # [M, C, K]
    return np.where(same, np.inf, dist).min(-1) - dist.min(-1)


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


# --------------------------------------------------------------------------- cases


class Case:
    """One model with its plan (from the torch module), ONNX file and compiled variants."""

    def __init__(self, name, model, calibration, x, reference, expected_lut, tmp):
        self.name, self.model, self.x, self.reference = name, model, x, reference
        self.expected_lut = expected_lut
        self.tmp = tmp
        self.plan = lut_tvm.build_kmeans_plan(model, calibration)
        self.onnx_path = _export_onnx(model, x, tmp / f"{name}.onnx")
        self._compiled = {}

    def compiled(self, frontend, planned=True, **kwargs):
        key = (frontend, planned)
        if key not in self._compiled:
            source = self.model if frontend == "torch" else str(self.onnx_path)
            self._compiled[key] = lut_tvm.compile(
                source, self.plan if planned else None, example_inputs=(self.x,), **kwargs)
        return self._compiled[key]


@pytest.fixture(scope="module")
def mlp_case(digits, tmp_path_factory):
    flat = digits.reshape(len(digits), -1)
    return Case("mlp", _seeded(MLP, 0), flat[:256], flat[1000:1032], mlp_reference,
                ["fc1", "fc2"], tmp_path_factory.mktemp("mlp"))


@pytest.fixture(scope="module")
def cnn_case(digits, tmp_path_factory):
    images = digits[:, None]
    case = Case("cnn", _seeded(CNN, 1), images[:256], images[1000:1032], cnn_reference,
                ["conv2", "conv3", "fc1"], tmp_path_factory.mktemp("cnn"))
    # The torch-planned compile of the CNN also dumps its IR, for test_kernels_all_scheduled.
    case.ir_dir = case.tmp / "ir"
    case.compiled("torch", dump_ir=case.ir_dir)
    return case


@pytest.fixture(scope="module")
def dense3d_case(tmp_path_factory):
    rng = np.random.default_rng(2)
    calibration = rng.standard_normal((64, 5, 32)).astype(np.float32)
    x = rng.standard_normal((2, 5, 32)).astype(np.float32)
    return Case("dense3d", _seeded(Dense3D, 2), calibration, x, dense3d_reference,
                ["proj"], tmp_path_factory.mktemp("dense3d"))


@pytest.fixture(params=["mlp", "cnn", "dense3d"])
def case(request):
    return request.getfixturevalue(f"{request.param}_case")


# --------------------------------------------------------------------------- tests


def test_default_policy_plans_the_expected_layers(case):
    names = [layer.name for layer in case.plan.layers]
    assert names == case.expected_lut
    # PlanPolicy defaults: the first conv and the last Linear stay dense.
    assert "conv1" not in names
    last_linear = [n for n, m in case.model.named_modules() if isinstance(m, nn.Linear)][-1]
    assert last_linear not in names
    for layer in case.plan.layers:
        layer.validate()
        assert layer.num_centroids == 16


@pytest.mark.parametrize("frontend", ["torch", "onnx"])
def test_lut_compile_matches_reference(case, frontend):
    compiled = case.compiled(frontend)
    assert compiled.info.lut_layers == case.expected_lut
    y = compiled(case.x)

    expected, r = case.reference(case.model, case.plan, case.x)
    assert r.used == case.expected_lut  # the reference really took the LUT path for them
    assert y.shape == expected.shape
    assert_matches_reference(y, expected, r)
    # ...and the LUT approximation is visible, so the comparison above can tell LUT from dense.
    assert np.abs(y - _torch_out(case.model, case.x)).max() > 1e-3


def test_onnx_and_torch_lut_compiles_agree(case):
    """Same plan bound through both frontends: the same LUT layers, the same numbers."""
    torch_c, onnx_c = case.compiled("torch"), case.compiled("onnx")
    assert onnx_c.info.lut_layers == torch_c.info.lut_layers == case.expected_lut
    clean = case.reference(case.model, case.plan, case.x)[1].clean_samples()
    np.testing.assert_allclose(onnx_c(case.x)[clean], torch_c(case.x)[clean], **LUT_TOL)


@pytest.mark.parametrize("frontend", ["torch", "onnx"])
def test_unplanned_compile_matches_torch_and_onnxruntime(case, frontend):
    compiled = case.compiled(frontend, planned=False)
    assert compiled.info.lut_layers == []
    y = compiled(case.x)
    torch_y = _torch_out(case.model, case.x)
    assert y.shape == torch_y.shape
    np.testing.assert_allclose(y, torch_y, **DENSE_TOL)
    np.testing.assert_allclose(y, _ort(case.onnx_path, case.x), **DENSE_TOL)
    # the no-plan reference forward is plain float math too
    np.testing.assert_allclose(y, case.reference(case.model, None, case.x)[0], **DENSE_TOL)


def test_export_then_load_gives_same_outputs(case):
    compiled = case.compiled("torch")
    path = compiled.export(case.tmp / "export" / f"{case.name}.so")
    assert path.is_file() and path.with_name(path.name + ".json").is_file()
    loaded = lut_tvm.load(path)
    assert loaded.info.lut_layers == case.expected_lut
    assert loaded.info.input_shapes == [list(case.x.shape)]
    np.testing.assert_array_equal(loaded(case.x), compiled(case.x))


def test_saved_plan_compiles_to_same_outputs(case):
    path = case.plan.save(case.tmp / "plans" / f"{case.name}.npz")
    loaded = lut_tvm.Plan.load(path)
    assert [l.name for l in loaded.layers] == [l.name for l in case.plan.layers]
    for before, after in zip(case.plan.layers, loaded.layers):
        assert after.weight_fingerprint == before.weight_fingerprint
        np.testing.assert_array_equal(after.centroids, before.centroids)
    # compile from the file path (not the in-memory Plan)
    from_file = lut_tvm.compile(case.model, str(path), example_inputs=(case.x,))
    assert from_file.info.lut_layers == case.expected_lut
    np.testing.assert_array_equal(from_file(case.x), case.compiled("torch")(case.x))


def test_dense3d_lut_layer_keeps_leading_dims(dense3d_case):
    """[2, 5, 32] -> LUT proj -> [2, 5, 24] -> dense out -> [2, 5, 8]."""
    y = dense3d_case.compiled("torch")(dense3d_case.x)
    assert y.shape == (2, 5, 8)
    expected, r = dense3d_reference(dense3d_case.model, dense3d_case.plan, dense3d_case.x)
    assert_matches_reference(y, expected, r)
    # rows are independent: swapping the two batch items swaps the outputs, so a reshape that
    # mixed up rows between batch items would show here
    swapped = dense3d_case.x[::-1].copy()
    np.testing.assert_allclose(dense3d_case.compiled("torch")(swapped), y[::-1], **LUT_TOL)


_PRIM_FUNC = re.compile(r"^\s*@T\.prim_func\b.*\n\s*def (\w+)\(", re.M)


def test_kernels_all_scheduled(cnn_case):
    ir_dir = cnn_case.ir_dir
    for stage in ("01_imported", "02_lut_rewrite", "03_legalized", "04_scheduled"):
        assert (ir_dir / f"{stage}.py").is_file(), stage
    text = (ir_dir / "04_scheduled.py").read_text()
    starts = [(m.start(), m.group(1)) for m in _PRIM_FUNC.finditer(text)]
    assert len(starts) == text.count("@T.prim_func"), "a PrimFunc header was not recognised"
    names = [name for _, name in starts]
    # the LUT kernels of all three planned layers are there, besides the dense ones
    for kernel in ("lut_encode_conv2d", "lut_lookup_conv2d", "lut_encode_dense", "lut_lookup_dense"):
        assert any(n.startswith(kernel) for n in names), (kernel, names)
    assert any(not n.startswith("lut_") for n in names), names
    ends = [pos for pos, _ in starts[1:]] + [len(text)]
    unscheduled = []
    for (start, name), end in zip(starts, ends):
        body = text[start:end]
        attrs = re.search(r"T\.func_attr\((\{.*?\})\)", body)
        if not attrs or not re.search(r'"tirx\.is_scheduled":\s*(True|1)\b', attrs.group(1)):
            unscheduled.append(name)
    assert not unscheduled, f"PrimFuncs without tirx.is_scheduled: {unscheduled}"
