"""lut_tvm.compile with an ExactPlan: a torch MLP and CNN on scikit-learn's digits, through
torch.export and ONNX, equal the quantized model's NumPy integer reference exactly.

The reference is written here from ``lut_tvm.exact.reference`` / ``conv_reference`` (int8
inputs, integer GEMM / conv, int32 bias, one float32 multiply), independent of the kernels.
Both look-up forms run: the T-MAC form (``auto``) on a target with AVX2 or AVX-512BW (the
host's), the gather form on a plain ``llvm`` target. ``quantize_model`` makes the
same exact plan from the ONNX file, a ``.pt2`` file or the torch module.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest

import lut_tvm
from lut_tvm._tvm_compat import constant_value
from lut_tvm.cli import main as cli_main
from lut_tvm.errors import PlanError
from lut_tvm.exact import reference as ref
from lut_tvm.exact.conv_reference import dequantize_nchw, int_conv2d
from lut_tvm.exact.plan import ExactLayerPlan, ExactPlan
from lut_tvm.exact.quantize import QuantizedTorchModel, predict, quantize_model
from lut_tvm.frontends import import_model
from lut_tvm.targets import host_cpu_flags
from lut_tvm.testing import lut_calls
from lut_tvm.torch_layers import module_weight
from lut_tvm.weights import LayerKind

torch = pytest.importorskip("torch")
nn = torch.nn
pytestmark = pytest.mark.filterwarnings("ignore:Renaming name:UserWarning")

PLAIN = {"kind": "llvm"}  # no shuffle known: the gather form
HAS_SHUFFLE = "avx2" in host_cpu_flags()
SHUFFLE = "native"


class DigitsMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 37), nn.Linear(37, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class DigitsCNN(nn.Module):
    """Odd channel counts; a stride-2 padded conv; a conv without bias."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 7, 3, padding=1)
        self.conv2 = nn.Conv2d(7, 11, 3, stride=2, padding=1, bias=False)
        self.fc = nn.Linear(11 * 4 * 4, 10)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.conv2(h))
        return self.fc(h.flatten(1))


LAYERS = {DigitsMLP: ["fc1", "fc2"], DigitsCNN: ["conv1", "conv2", "fc"]}
BITS = {"fc1": 3, "fc2": 8, "conv1": 5, "conv2": 2, "fc": 6}


@functools.lru_cache(maxsize=None)
def digits():
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel

    data = load_digits()
    return (data.images / 16.0).astype(np.float32), data.target.astype(np.int64)


@functools.lru_cache(maxsize=None)
def trained(model_cls):
    """A briefly trained (60 steps), seeded model: real weights in seconds, fc1 pruned."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: threads only add overhead
    try:
        model, inputs = _train(model_cls)
    finally:
        torch.set_num_threads(threads)
    return model.eval(), inputs


def _train(model_cls):
    """Adam on scikit-learn's digits; fc1's inputs 8..23 (whole groups of 4) pruned after."""
    images, labels = digits()
    model = model_cls()
    inputs = torch.from_numpy(images if model_cls is DigitsCNN else images.reshape(-1, 64))
    if model_cls is DigitsCNN:
        inputs = inputs[:, None]
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    for step in range(60):
        batch = slice((step * 64) % 1700, (step * 64) % 1700 + 64)
        loss = nn.functional.cross_entropy(model(inputs[batch]), torch.from_numpy(labels[batch]))
        optim.zero_grad()
        loss.backward()
        optim.step()
    with torch.no_grad():  # prune: whole groups of 4 inputs of fc1 become zero
        if model_cls is DigitsMLP:
            model.fc1.weight[:, 8:24] = 0.0
    return model, inputs.numpy()


def layer_inputs(model, x) -> dict:
    """Each planned layer's float input on ``x`` (forward hooks)."""
    seen = {}

    def keep(name):
        def hook(_module, args, _out):
            seen[name] = args[0].detach().numpy()
        return hook

    hooks = [getattr(model, name).register_forward_hook(keep(name)) for name in LAYERS[type(model)]]
    with torch.no_grad():
        model(torch.from_numpy(x))
    for hook in hooks:
        hook.remove()
    return seen


def make_plan(model, calibration) -> ExactPlan:
    inputs = layer_inputs(model, calibration)
    layers = []
    for name in LAYERS[type(model)]:
        module = getattr(model, name)
        kind = LayerKind.DENSE if isinstance(module, nn.Linear) else LayerKind.CONV2D
        layers.append(ExactLayerPlan.from_weight(
            name, kind, module_weight(module), BITS[name], ref.calibrate_activation_scale(inputs[name])))
    return ExactPlan(layers, provenance={"test": "digits"})


def quantized_layer(model, plan: ExactPlan, name: str, x: np.ndarray) -> np.ndarray:
    """One planned layer of the quantized model in NumPy integers."""
    module = getattr(model, name)
    layer = {entry.name: entry for entry in plan.layers}[name]
    wq = layer.quantized_weight(module_weight(module))
    out_scale = ref.output_scale(layer.act_scale, layer.w_scale)
    bias = None if module.bias is None else module.bias.detach().numpy()
    bias_q = ref.quantize_bias(bias, out_scale)
    xq = ref.quantize_activations(x, layer.act_scale)
    if isinstance(module, nn.Linear):
        return ref.dequantize(ref.int_gemm(xq, wq), out_scale, bias_q)
    acc = int_conv2d(xq, wq.T.reshape(module.weight.shape), stride=module.stride,
                     padding=module.padding)
    return dequantize_nchw(acc, out_scale, bias_q)


def reference_forward(model, plan: ExactPlan, x: np.ndarray) -> np.ndarray:
    def layer(name, h):
        return quantized_layer(model, plan, name, h)

    if isinstance(model, DigitsMLP):
        return layer("fc2", np.maximum(layer("fc1", x), 0))
    h = np.maximum(layer("conv1", x), 0)
    h = np.maximum(layer("conv2", h), 0)
    return layer("fc", h.reshape(h.shape[0], -1))


def export_onnx(model, x, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(x),), str(path), dynamo=False)
    return str(path)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exact")
    built = {}
    for model_cls in (DigitsMLP, DigitsCNN):
        model, inputs = trained(model_cls)
        plan = make_plan(model, inputs[:200])
        x = inputs[1000:1013]  # 13 rows: not a multiple of any vector width
        built[model_cls] = (model, plan, x, export_onnx(model, x, tmp / f"{model_cls.__name__}.onnx"))
    return built


FRONTENDS = [
    pytest.param(DigitsMLP, "torch", SHUFFLE, id="mlp-torch-tmac",
                 marks=pytest.mark.skipif(not HAS_SHUFFLE, reason="no AVX2")),
    pytest.param(DigitsMLP, "onnx", PLAIN, id="mlp-onnx-gather"),
    pytest.param(DigitsCNN, "torch", PLAIN, id="cnn-torch-gather"),
    pytest.param(DigitsCNN, "onnx", SHUFFLE, id="cnn-onnx-tmac",
                 marks=pytest.mark.skipif(not HAS_SHUFFLE, reason="no AVX2")),
]


@pytest.mark.parametrize("model_cls, frontend, target", FRONTENDS)
def test_compiled_model_equals_quantized_reference(cases, model_cls, frontend, target, tmp_path):
    model, plan, x, onnx_path = cases[model_cls]
    source = model if frontend == "torch" else onnx_path
    compiled = lut_tvm.compile(source, plan, target=target, example_inputs=(x,), tuning_logs=False,
                               dump_ir=tmp_path)
    assert compiled.info.lut_layers == LAYERS[model_cls]
    rewritten = (tmp_path / "02_lut_rewrite.py").read_text()
    form = "exact_tmac" if target == SHUFFLE else "exact_lut_dense"
    assert rewritten.count(f'"lut_tvm.kind": "{form}"') == len(LAYERS[model_cls])
    if target == SHUFFLE and {"avx512f", "avx512bw"} <= host_cpu_flags():
        assert '"lut_tvm.word": 1' in rewritten  # whole int16 tables, vpermw
    got = compiled(x)
    want = reference_forward(model, plan, x)
    np.testing.assert_array_equal(got, want)
    with torch.no_grad():  # and the quantized model is still the float model, roughly
        float_out = model(torch.from_numpy(x)).numpy()
    assert (got.argmax(1) == float_out.argmax(1)).mean() >= 0.75


def test_plan_file_is_detected_and_kernels_are_exact(cases, tmp_path):
    """A saved exact plan compiles from its path; every planned layer became an exact kernel."""
    model, plan, x, onnx_path = cases[DigitsCNN]
    path = plan.save(tmp_path / "exact_plan.npz")
    ir_dir = tmp_path / "ir"
    compiled = lut_tvm.compile(onnx_path, str(path), target=PLAIN, dump_ir=ir_dir,
                               tuning_logs=False)
    np.testing.assert_array_equal(compiled(x), reference_forward(model, plan, x))
    rewritten = (ir_dir / "02_lut_rewrite.py").read_text()
    assert rewritten.count('"lut_tvm.kind": "exact_lut_dense"') == 3
    assert "R.nn.conv2d" not in rewritten and "R.matmul" not in rewritten


def test_cli_compiles_an_exact_plan(cases, tmp_path, capsys):
    _, plan, x, onnx_path = cases[DigitsMLP]
    path = plan.save(tmp_path / "mlp_exact.npz")
    code = cli_main(["compile", onnx_path, "--plan", str(path), "-o", str(tmp_path / "mlp.so")])
    out, err = capsys.readouterr()
    assert code == 0 and "LUT layers: fc1, fc2" in out, err
    loaded = lut_tvm.load(str(tmp_path / "mlp.so"))
    np.testing.assert_array_equal(loaded(x), reference_forward(cases[DigitsMLP][0], plan, x))


def test_plan_for_another_model_names_file_and_layer(cases, tmp_path):
    _, plan, _, _ = cases[DigitsMLP]
    path = plan.save(tmp_path / "mlp_plan.npz")
    _, _, _, cnn_onnx = cases[DigitsCNN]
    with pytest.raises(PlanError, match=r"exact plan file '.*mlp_plan\.npz'.*'fc1'"):
        lut_tvm.compile(cnn_onnx, str(path), target=PLAIN)


def test_uncompiled_piece_bits_names_file_and_layer(cases, tmp_path):
    _, plan, _, onnx_path = cases[DigitsMLP]
    bad = ExactPlan([ExactLayerPlan(**{**vars(plan.layers[0])})])
    bad.layers[0].piece_bits = 2
    path = bad.save(tmp_path / "bad_plan.npz")
    with pytest.raises(PlanError, match=r"bad_plan\.npz.*'fc1'.*piece_bits"):
        lut_tvm.compile(onnx_path, str(path), target=PLAIN)


def test_bias_is_folded_into_the_kernel(cases):
    """No float bias add is left after an exact kernel (it would round differently)."""
    from lut_tvm.compiler import exact_rewrite_passes  # pylint: disable=import-outside-toplevel
    import tvm  # pylint: disable=import-outside-toplevel

    model, plan, x, _ = cases[DigitsMLP]
    mod = tvm.transform.Sequential(exact_rewrite_passes(plan))(import_model(model, (x,)).mod)
    calls = lut_calls(mod)
    assert [kind for kind, _ in calls] == ["exact_lut_dense", "exact_lut_dense"]
    biases = [constant_value(call.args[1].fields[4]) for _, call in calls]
    assert all(b.dtype == np.int32 and b.any() for b in biases)
    assert "R.add" not in mod.script()


def _tail_peak_calibration(inputs: np.ndarray) -> np.ndarray:
    """200 samples whose largest |x| is in sample 199: past the last full batch of 13 (the ONNX
    files' batch), so a calibration that dropped the last partial batch would get another scale."""
    calibration = inputs[:200].copy()
    calibration[199] *= 3.0
    return calibration


def assert_same_plan(got: ExactPlan, want: ExactPlan) -> None:
    assert [layer.name for layer in got.layers] == [layer.name for layer in want.layers]
    for a, b in zip(got.layers, want.layers):
        assert (a.weight_fingerprint, a.bits, a.kind) == (b.weight_fingerprint, b.bits, b.kind), a.name
        assert a.act_scale == b.act_scale, a.name
        np.testing.assert_array_equal(a.w_scale, b.w_scale)


@pytest.mark.parametrize("model_cls", [DigitsMLP, DigitsCNN])
def test_exact_plan_from_onnx_compiles_bit_exact(cases, model_cls):
    """quantize_model on the ONNX file: the compiler's layers and names, the same plan as from the
    torch module, and the compiled model equals the NumPy integer reference and the torch
    fake-quant model of that plan bit for bit."""
    model, _, x, onnx_path = cases[model_cls]
    calibration = _tail_peak_calibration(trained(model_cls)[1])
    bits = {name: BITS[name] for name in LAYERS[model_cls]}
    from_onnx = quantize_model(onnx_path, calibration, bits)
    assert [layer.name for layer in from_onnx.layers] == LAYERS[model_cls]
    assert from_onnx.bits_per_layer() == bits
    assert from_onnx.layers[0].act_scale == ref.calibrate_activation_scale(calibration)
    floats = layer_inputs(model, calibration)  # torch's float inputs: TVM's within rounding
    for layer in from_onnx.layers:
        assert layer.act_scale == pytest.approx(ref.calibrate_activation_scale(floats[layer.name]), rel=1e-5)
    assert_same_plan(from_onnx, quantize_model(model, calibration, bits))
    compiled = lut_tvm.compile(onnx_path, from_onnx, target=PLAIN, tuning_logs=False)
    assert compiled.info.lut_layers == LAYERS[model_cls]
    got = compiled(x)
    np.testing.assert_array_equal(got, reference_forward(model, from_onnx, x))
    np.testing.assert_array_equal(predict(QuantizedTorchModel(model, from_onnx), x), got)


def test_exact_plan_from_pt2_and_imported_model(cases, tmp_path):
    """A .pt2 file and an already imported model give the torch module's plan too."""
    model, _, x, onnx_path = cases[DigitsMLP]
    calibration = _tail_peak_calibration(trained(DigitsMLP)[1])
    want = quantize_model(model, calibration, 4)
    pt2 = tmp_path / "mlp.pt2"
    torch.export.save(torch.export.export(model, (torch.from_numpy(x),)), str(pt2))
    assert_same_plan(quantize_model(pt2, calibration, 4), want)
    assert_same_plan(quantize_model(import_model(onnx_path, (x,)), calibration, 4), want)
    with pytest.raises(PlanError, match="calibration data has shape"):
        quantize_model(onnx_path, calibration[:, :10], 4)


def test_cli_quantize_writes_the_plan_quantize_model_makes(cases, tmp_path, capsys):
    """`lut-tvm quantize` on an ONNX file: the plan of ``quantize_model`` with the same bits; a layer
    name the model lacks is refused by name."""
    _, _, _, onnx_path = cases[DigitsMLP]
    calibration = _tail_peak_calibration(trained(DigitsMLP)[1])
    np.save(tmp_path / "calibration.npy", calibration)
    args = ["quantize", onnx_path, "--calibration", str(tmp_path / "calibration.npy"), "--bits", "5",
            "--layer-bits", "fc2=3", "-o", str(tmp_path / "exact.npz")]
    code = cli_main(args)
    out, err = capsys.readouterr()
    assert code == 0 and "fc2" in out and "2 exact LUT layers" in out, err
    assert_same_plan(ExactPlan.load(tmp_path / "exact.npz"),
                     quantize_model(onnx_path, calibration, {"fc1": 5, "fc2": 3}))
    assert cli_main(args[:-4] + ["--layer-bits", "fc9=3", "-o", str(tmp_path / "bad.npz")]) != 0
    assert "fc9" in capsys.readouterr().err
    assert cli_main(args[:-6] + ["--bits", "9", "-o", str(tmp_path / "bad.npz")]) != 0
    assert "weight bits" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_SHUFFLE, reason="no AVX2: no T-MAC kernel")
@pytest.mark.parametrize("bits", [1, 2])
def test_cli_quantize_low_bits_then_compile_is_exact(cases, tmp_path, capsys, bits):
    """`lut-tvm quantize --bits 1|2` (binary {-1, +1} / ternary) + `lut-tvm compile`: the T-MAC
    kernels run the whole CNN bit-exactly against the integer reference."""
    model, _, x, onnx_path = cases[DigitsCNN]
    np.save(tmp_path / "calibration.npy", _tail_peak_calibration(trained(DigitsCNN)[1]))
    plan_path = tmp_path / f"cnn_b{bits}.npz"
    assert cli_main(["quantize", onnx_path, "--calibration", str(tmp_path / "calibration.npy"),
                     "--bits", str(bits), "-o", str(plan_path)]) == 0, capsys.readouterr().err
    plan = ExactPlan.load(plan_path)
    assert plan.bits_per_layer() == {name: bits for name in LAYERS[DigitsCNN]}
    library = tmp_path / f"cnn_b{bits}.so"
    assert cli_main(["compile", onnx_path, "--plan", str(plan_path), "-o", str(library)]) == 0, \
        capsys.readouterr().err
    np.testing.assert_array_equal(lut_tvm.load(str(library))(x), reference_forward(model, plan, x))
