"""Post-training exact quantization (layers found by the compiler's discovery): the torch fake-quant
model equals the NumPy integer reference."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lut_tvm.errors import PlanError
from lut_tvm.exact import reference as ref
from lut_tvm.exact.conv_reference import dequantize_nchw, int_conv2d
from lut_tvm.exact.plan import ExactPlan
from lut_tvm.exact.quantize import (Backend, QuantizedTorchModel, calibrate_layers, evaluate_quantized,
                                    predict, quantize_model)
from lut_tvm.weights import fingerprint


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 48), nn.Linear(48, 32), nn.Linear(32, 10)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False)
        self.fc = nn.Linear(8 * 2 * 2, 10)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        return self.fc(F.relu(self.conv2(h)).flatten(1))


def _digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.images / 16.0).astype(np.float32)[:, None], data.target


def _model(cls, seed=0):
    torch.manual_seed(seed)
    return cls().eval()


def _layer(plan, name):
    return next(layer for layer in plan.layers if layer.name == name)


def _quantized_dense(model, plan, name):
    """The reference's QuantizedDense of layer ``name`` with the plan's scales."""
    layer, module = _layer(plan, name), model.get_submodule(name)
    wq = layer.quantized_weight(module.weight.detach().numpy().T)
    out_scale = ref.output_scale(layer.act_scale, layer.w_scale)
    bias_q = ref.quantize_bias(module.bias.detach().numpy(), out_scale)
    return ref.QuantizedDense(wq, layer.bits, layer.w_scale, np.float32(layer.act_scale), bias_q)


def _numpy_mlp(model, plan, x, use_lut):
    h = x.reshape(len(x), -1)
    for name, relu in (("fc1", True), ("fc2", True), ("fc3", False)):
        h = _quantized_dense(model, plan, name)(h, relu=relu, use_lut=use_lut)
    return h


def _numpy_conv(model, plan, name, x, use_lut):
    layer, module = _layer(plan, name), model.get_submodule(name)
    wq_dn = layer.quantized_weight(module.weight.detach().numpy())
    wq = wq_dn.T.reshape(module.weight.shape)
    xq = ref.quantize_activations(x, layer.act_scale)
    acc = int_conv2d(xq, wq, module.stride, module.padding, module.dilation,
                     bits=layer.bits if use_lut else None)
    out_scale = ref.output_scale(layer.act_scale, layer.w_scale)
    bias = None if module.bias is None else module.bias.detach().numpy()
    return dequantize_nchw(acc, out_scale, ref.quantize_bias(bias, out_scale), relu=True)


def _numpy_cnn(model, plan, x, use_lut):
    h = _numpy_conv(model, plan, "conv1", x, use_lut)
    h = h.reshape(len(h), 6, 4, 2, 4, 2).max(axis=(3, 5))  # 2x2 max pool of 8x8
    h = _numpy_conv(model, plan, "conv2", h, use_lut).reshape(len(h), -1)
    return _quantized_dense(model, plan, "fc")(h)


@pytest.mark.parametrize("cls,numpy_forward", [(MLP, _numpy_mlp), (CNN, _numpy_cnn)])
@pytest.mark.parametrize("bits", [8, 3, {"fc1": 2, "conv1": 5}])
def test_fake_quant_equals_integer_reference(cls, numpy_forward, bits):
    x, _ = _digits()
    model = _model(cls)
    if isinstance(bits, dict):
        bits = {k: v for k, v in bits.items() if k in dict(model.named_modules())}
    plan = quantize_model(model, x[:200], bits)
    test = x[200:328]
    fake = predict(QuantizedTorchModel(model, plan), test)
    expected = numpy_forward(model, plan, test, use_lut=False)
    np.testing.assert_array_equal(fake, expected)
    lut = predict(QuantizedTorchModel(model, plan, Backend.REFERENCE_LUT), test[:32])
    np.testing.assert_array_equal(lut, expected[:32])
    np.testing.assert_array_equal(numpy_forward(model, plan, test[:16], use_lut=True), expected[:16])


def test_float64_path_is_exact_for_large_reductions():
    """D large enough that int8 x int8 sums pass 2^24: the float64 GEMM keeps them exact."""
    torch.manual_seed(1)
    model = nn.Linear(4096, 3).eval()
    with torch.no_grad():
        model.weight.copy_(torch.ones_like(model.weight))
    x = np.full((4, 4096), 1.0, np.float32)
    x[:, 0] = 1.0 + 1e-3
    plan = quantize_model(model, x)
    layer = plan.layers[0]
    got = predict(QuantizedTorchModel(model, plan), x)
    dense = ref.QuantizedDense(layer.quantized_weight(model.weight.detach().numpy().T), 8, layer.w_scale,
                               np.float32(layer.act_scale),
                               ref.quantize_bias(model.bias.detach().numpy(),
                                                 ref.output_scale(layer.act_scale, layer.w_scale)))
    assert 127 * 127 * 4096 > 2 ** 24
    np.testing.assert_array_equal(got, dense(x))


def test_plan_names_fingerprints_and_round_trip(tmp_path):
    x, _ = _digits()
    model = _model(CNN)
    plan = quantize_model(model, x[:100], {"conv2": 4})
    assert plan.bits_per_layer() == {"conv1": 8, "conv2": 4, "fc": 8}
    assert _layer(plan, "fc").weight_fingerprint == fingerprint(model.fc.weight.detach().numpy().T)
    assert _layer(plan, "conv1").weight_fingerprint == fingerprint(model.conv1.weight.detach().numpy())
    peak = np.abs(x[:100]).max()
    assert _layer(plan, "conv1").act_scale == pytest.approx(peak / 127, rel=1e-6)
    loaded = ExactPlan.load(plan.save(tmp_path / "plan.npz"))
    np.testing.assert_array_equal(predict(QuantizedTorchModel(model, loaded), x[:50]),
                                  predict(QuantizedTorchModel(model, plan), x[:50]))


def test_int8_accuracy_close_to_float_on_trained_mlp():
    x, y = _digits()
    model = _model(MLP)
    xt, yt = torch.from_numpy(x[:1400]), torch.from_numpy(y[:1400])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(model(xt), yt).backward()
        opt.step()
    model.eval()
    test = (x[1400:], y[1400:])
    float_acc = float((predict(model, test[0]).argmax(-1) == test[1]).mean())
    int8 = evaluate_quantized(model, quantize_model(model, x[:300]), test)
    assert float_acc > 0.85 and abs(int8 - float_acc) <= 0.02


def test_bad_input_names_the_layer():
    x, _ = _digits()
    model = _model(MLP)
    with pytest.raises(PlanError, match="fc9"):
        quantize_model(model, x[:10], {"fc9": 4})
    with pytest.raises(ValueError, match="weight bits"):
        quantize_model(model, x[:10], 9)
    with pytest.raises(PlanError, match="another model"):
        QuantizedTorchModel(_model(MLP, seed=5), quantize_model(model, x[:10]))
    assert [c.rows_per_sample for c in calibrate_layers(_model(CNN), x[:8])] == [64, 4, 1]


class SameCNN(nn.Module):
    """padding='same' (odd and even kernels) and a grouped conv, which stays float."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding="same")
        self.depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.conv2 = nn.Conv2d(4, 6, 2, padding="same")
        self.fc = nn.Linear(6 * 8 * 8, 10)

    def forward(self, x):
        h = F.relu(self.conv2(F.relu(self.depthwise(F.relu(self.conv1(x))))))
        return self.fc(h.flatten(1))


@pytest.mark.filterwarnings("ignore:Using padding=.same.:UserWarning")
def test_string_padding_and_grouped_conv():
    """The compiler's discovery leaves the grouped conv out of the plan; 'same' padding (the even
    kernel's odd pixel bottom/right) is computed alike by the fake-quant and the NumPy LUT paths."""
    x, _ = _digits()
    model = _model(SameCNN)
    plan = quantize_model(model, x[:64], 4)
    assert [layer.name for layer in plan.layers] == ["conv1", "conv2", "fc"]
    fake = predict(QuantizedTorchModel(model, plan), x[64:72])
    np.testing.assert_array_equal(predict(QuantizedTorchModel(model, plan, Backend.REFERENCE_LUT), x[64:72]), fake)
    assert np.abs(fake - predict(model, x[64:72])).max() < 0.5 * np.abs(predict(model, x[64:72])).max()
