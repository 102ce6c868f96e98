"""Fixtures of the deploy tests: the emulated ARM64 device (provisioned by the project's own
script, cached under ~/.cache/lut_tvm/arm64) and the digits CNN with a k-means LUT plan.

Provisioning needs apt-get (root), mmdebstrap and the network: where it cannot be done the
device tests are *skipped with the reason*; under CI (``CI=true``) or with
``LUT_TVM_REQUIRE_ARM64_DEVICE=1`` they fail instead, so CI never passes without the device.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from lut_tvm import reference as ref

BATCH = 32
# Tight: LUT layers are exact table sums; the dense layers around them differ by float rounding
# (aarch64 FMA vs NumPy float64).
LUT_TOL = dict(rtol=1e-5, atol=1e-5)
MIN_ENCODE_MARGIN = 1e-6  # relative: see _encode_margin
MIN_CLEAN_FRACTION = 0.75


def _device_required() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true") or \
        os.environ.get("LUT_TVM_REQUIRE_ARM64_DEVICE", "") not in ("", "0")


def unavailable(reason: str):
    """Skip with ``reason``, or fail where the device is required (CI)."""
    if _device_required():
        pytest.fail(f"the emulated ARM64 device is required here (CI) but: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def arm64_cache():
    """The provisioned sysroot + wheels (runs scripts/arm64_device/provision.sh)."""
    from lut_tvm.deploy.emulated import ProvisionError, provision

    try:
        return provision(quiet=True)
    except ProvisionError as err:
        unavailable(f"cannot provision the emulated ARM64 device: {err}")


@pytest.fixture(scope="session")
def start_device(arm64_cache):
    """A factory of emulated devices (stopped at the end of the session)."""
    from lut_tvm.deploy.emulated import start_emulated

    started = []

    def start(**kwargs):
        device = start_emulated(0, cache=arm64_cache, do_provision=False, quiet=True, **kwargs)
        started.append(device)
        return device

    yield start
    for device in started:
        device.stop(kill=True)


@pytest.fixture(scope="session")
def arm64_device(start_device):
    """The shared emulated ARM64 device (a real aarch64 TVM RPC server under qemu, loopback)."""
    return start_device()


@pytest.fixture(scope="session")
def cross_linker():
    if shutil.which("aarch64-linux-gnu-g++") is None:
        unavailable("aarch64-linux-gnu-g++ is not installed (provisioning installs it)")
    return "aarch64-linux-gnu-g++"


# --------------------------------------------------------------------------- digits CNN


class DigitsCase:
    """lut_tvm's digits CNN (seeded weights), a k-means LUT plan, compiled for arm64 and host."""

    def __init__(self):
        import torch

        import lut_tvm
        from lut_tvm.demo import digits_cnn, load_digits_split
        from lut_tvm.planner import PlanPolicy, build_kmeans_plan

        x_train, x_test, _, _ = load_digits_split(0)
        torch.manual_seed(0)
        self.model = digits_cnn().eval()
        self.x = np.ascontiguousarray(x_test[:BATCH])
        self.plan = build_kmeans_plan(self.model, x_train[:256], PlanPolicy(seed=0),
                                      example_inputs=(self.x,))
        self.arm64 = lut_tvm.compile(self.model, self.plan, target="arm64", example_inputs=(self.x,))
        self.weights = {k: v.detach().numpy().astype(np.float64)
                        for k, v in self.model.state_dict().items()}
        self.expected, self.clean = self.reference(self.x)

    def reference(self, x):
        """NumPy forward: planned layers by ``lut_tvm.reference``, the others in float64."""
        planned = {layer.name: layer.centroids for layer in self.plan.layers}
        margin = np.full(len(x), np.inf)
        w = self.weights

        def note(rows, cents):
            nonlocal margin
            gap = _encode_margin(rows, cents).reshape(len(x), -1).min(1)
            margin = np.minimum(margin, gap)

        def conv(h, name):
            weight, bias = w[f"{name}.weight"], w[f"{name}.bias"]
            rows, (n, oh, ow) = ref.im2col_nchw(h, weight.shape[2:], (1, 1), (1, 1, 1, 1))
            if name in planned:
                note(rows, planned[name])
                return ref.lut_conv2d(h, planned[name], weight, bias, (1, 1), (1, 1, 1, 1))
            out = rows @ weight.reshape(len(weight), -1).T + bias
            return out.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)

        def linear(h, name):
            weight, bias = w[f"{name}.weight"], w[f"{name}.bias"]
            if name in planned:
                note(h, planned[name])
                return ref.lut_matmul(h, planned[name], weight.T, bias)
            return h @ weight.T + bias

        relu = lambda a: np.maximum(a, 0)  # noqa: E731
        h = relu(conv(x.astype(np.float64), "0"))
        h = relu(conv(h, "2"))
        n, c, hh, ww = h.shape
        h = h.reshape(n, c, hh // 2, 2, ww // 2, 2).max((3, 5))
        h = relu(conv(h, "5"))
        h = relu(linear(h.reshape(n, -1), "8"))
        return linear(h, "10"), margin > MIN_ENCODE_MARGIN

    def assert_matches(self, y):
        assert y.shape == self.expected.shape
        assert self.clean.mean() >= MIN_CLEAN_FRACTION, "too many encode near-ties: pick other data"
        np.testing.assert_allclose(y[self.clean], self.expected[self.clean], **LUT_TOL)


def _encode_margin(rows, centroids):
    """Per row and codebook: the gap between the nearest and the nearest *different* centroid's
    distance (as in test_compile_e2e), relative to the size of the numbers that make the distance
    (``||x||^2 + max ||P||^2``): float32 rounding moves a distance by ~1e-7 of that, so a
    relative gap above 1e-6 (~8 float32 epsilons) cannot flip the code. (Relative, because the
    untrained CNN's activations are small.)"""
    dist = ref.centroid_distances(rows, centroids)  # [M, C, K]
    best = dist.argmin(-1)
    num_codebooks, _, sub_len = centroids.shape
    best_vec = centroids[np.arange(num_codebooks)[None, :], best]
    same = (centroids[None] == best_vec[:, :, None, :]).all(-1)
    gap = np.where(same, np.inf, dist).min(-1) - dist.min(-1)
    sub = rows.reshape(len(rows), num_codebooks, sub_len)
    size = (sub.astype(np.float64) ** 2).sum(-1) + (centroids.astype(np.float64) ** 2).sum(-1).max(-1)
    return gap / np.maximum(size, 1e-30)


@pytest.fixture(scope="session")
def digits():
    return DigitsCase()


@pytest.fixture(scope="session")
def digits_lib(digits, cross_linker, tmp_path_factory):
    """The arm64 digits model exported as a cross-linked shared library."""
    path = digits.arm64.export(tmp_path_factory.mktemp("arm64") / "digits_lut.so")
    assert path.suffix == ".so", digits.arm64.export_message
    return path
