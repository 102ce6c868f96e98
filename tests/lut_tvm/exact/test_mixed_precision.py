"""Mixed-precision search on a small trained CNN: the bound holds on validation, cost never rises."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lut_tvm.exact.mixed_precision import CostTable, search_bits
from lut_tvm.exact.quantize import calibrate_layers, evaluate_quantized


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return self.fc(h.flatten(1))


@pytest.fixture(scope="module")
def trained():
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = (data.images / 16.0).astype(np.float32)[:, None], data.target
    torch.manual_seed(0)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    xt, yt = torch.from_numpy(x[:1000]), torch.from_numpy(y[:1000])
    for _ in range(8):
        for index in torch.randperm(1000).split(50):
            opt.zero_grad()
            F.cross_entropy(model(xt[index]), yt[index]).backward()
            opt.step()
    return model.eval(), x, y


def test_search_meets_bound_on_validation_and_is_no_costlier(trained):
    model, x, y = trained
    calibration, validation = x[:256], (x[1000:1400], y[1000:1400])
    result = search_bits(model, calibration, validation, bound=1.0, seed=0, progress=False)
    assert result.met and set(result.bits) == {"conv1", "conv2", "fc"}
    assert all(2 <= b <= 8 for b in result.bits.values())
    assert result.float_accuracy > 0.88
    # The reported accuracy is re-measured independently and meets the bound.
    again = evaluate_quantized(model, result.plan, validation)
    assert again == result.accuracy >= result.float_accuracy - 0.01
    assert result.plan.bits_per_layer() == result.bits
    assert result.cost <= result.max_bits_cost
    assert min(result.bits.values()) < 8, "some layer should tolerate fewer than 8 bits"
    assert result.cost < result.max_bits_cost
    costs = CostTable(calibrate_layers(model, calibration))
    assert costs.total(result.bits, "energy") == pytest.approx(result.cost)
    assert costs.total({k: 8 for k in result.bits}, "energy") == pytest.approx(result.max_bits_cost)


def test_zero_bound_and_lookups_metric(trained):
    model, x, y = trained
    validation = (x[1000:1300], y[1000:1300])
    result = search_bits(model, x[:256], validation, bound=0.0, metric="lookups", min_bits=4,
                         progress=False)
    assert all(4 <= b <= 8 for b in result.bits.values())
    if result.met:
        assert result.accuracy >= result.float_accuracy
    assert result.cost <= result.max_bits_cost
    with pytest.raises(ValueError, match="metric"):
        search_bits(model, x[:16], validation, metric="area")
