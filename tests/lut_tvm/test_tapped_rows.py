"""The planner's calibration rows are every row each layer multiplies: for a Linear on a 3-D input (which
torch.export flattens to ``[B * S, D]``) every token of every sample, with a full batch and with a padded
last batch, equal to the rows a torch forward hook sees."""

import numpy as np
import pytest
import torch
from torch import nn

from lut_tvm.optimizer.inputs import import_checked
from lut_tvm.optimizer.layers import model_layers
from lut_tvm.planner import collect_layer_rows, tapped_batches

BATCH, TOKENS, WIDTH = 2, 5, 8


class TokenMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(WIDTH, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.mark.parametrize("samples", [4, 5])  # whole batches; a last batch padded with a zero sample
def test_every_token_row_is_collected(samples):
    torch.manual_seed(0)
    model = TokenMLP().eval()
    calibration = np.random.default_rng(1).standard_normal((samples, TOKENS, WIDTH)).astype(np.float32)
    imported, _ = import_checked(model, calibration, calibration, BATCH)
    layers = model_layers(imported, (2,))
    assert [layer.name for layer in layers] == ["fc1", "fc2"]
    rows = collect_layer_rows(imported, calibration, [layer.site for layer in layers], max_rows=10**6, rng=None)
    seen = {}
    hooks = [model.get_submodule(name).register_forward_hook(
        lambda _m, args, _o, name=name: seen.setdefault(name, []).append(args[0].detach().numpy()))
        for name in ("fc1", "fc2")]
    try:
        with torch.no_grad():
            for start in range(0, samples - samples % BATCH, BATCH):
                model(torch.from_numpy(calibration[start : start + BATCH]))
    finally:
        for hook in hooks:
            hook.remove()
    for layer, got in zip(layers, rows):
        expected = np.concatenate(seen[layer.name]).reshape(-1, layer.site.weight.shape[0])
        assert got.shape == expected.shape == ((samples - samples % BATCH) * TOKENS, layer.site.weight.shape[0])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_padded_last_batch_keeps_only_its_samples_rows():
    torch.manual_seed(0)
    model = TokenMLP().eval()
    calibration = np.random.default_rng(2).standard_normal((3, TOKENS, WIDTH)).astype(np.float32)
    imported, _ = import_checked(model, calibration, calibration, BATCH)
    site = model_layers(imported, (2,), ["fc1"])[0].site
    got = np.concatenate([inputs[0].reshape(-1, WIDTH) for inputs in tapped_batches(imported, calibration, [site],
                                                                                     keep_tail=True)])
    np.testing.assert_allclose(got, calibration.reshape(-1, WIDTH), rtol=1e-6, atol=1e-6)  # fc1's input is x
