"""Fixtures of the deploy tests: the emulated ARM64 device (provisioned by the project's own
script, cached under ~/.cache/lut_tvm/arm64), the digits CNN with a k-means LUT plan, and its codes
on the device (the reference runs with them: ``lut_tvm.testing.GivenCodes``).

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
from lut_tvm.testing import ARM64_SKIP_PREFIX, GivenCodes, compile_with_codes

BATCH = 32
# Tight: given the same codes, LUT layers are exact table sums; the dense layers around them differ
# by float rounding (aarch64 FMA vs NumPy float64).
LUT_TOL = dict(rtol=1e-5, atol=1e-5)


def _device_required() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true") or \
        os.environ.get("LUT_TVM_REQUIRE_ARM64_DEVICE", "") not in ("", "0")


def unavailable(reason: str):
    """Skip with ``reason``, or fail where the device is required (CI)."""
    if _device_required():
        pytest.fail(f"the emulated ARM64 device is required here (CI) but: {reason}")
    pytest.skip(ARM64_SKIP_PREFIX + reason)  # counted by tests/conftest.py's summary line


@pytest.fixture(scope="session")
def arm64_cache():
    """The provisioned sysroot + wheels (runs scripts/arm64_device/provision.sh)."""
    from lut_tvm.deploy.emulated import ProvisionError, provision

    try:
        return provision(quiet=True)
    except ProvisionError as err:
        unavailable(str(err))  # "cannot provision the emulated ARM64 device: <why>"


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
def cross_linker(arm64_cache):
    """The cross linker (provisioning installs it)."""
    del arm64_cache
    if shutil.which("aarch64-linux-gnu-g++") is None:
        unavailable("aarch64-linux-gnu-g++ is not installed (provisioning installs it)")
    return "aarch64-linux-gnu-g++"


# --------------------------------------------------------------------------- digits CNN


class DigitsCase:
    """lut_tvm's digits CNN (seeded weights), a k-means LUT plan, compiled for arm64 (and a copy
    tapping its codes, ``compile_with_codes``)."""

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
        self.tapped = compile_with_codes(self.model, self.plan, target="arm64", example_inputs=(self.x,))
        self.weights = {k: v.detach().numpy().astype(np.float64)
                        for k, v in self.model.state_dict().items()}

    def reference(self, x, codes):
        """NumPy forward: planned layers by the reference run with ``codes`` (each checked against
        the nearest centroid: ``GivenCodes``), the others in float64."""
        planned = {layer.name: layer.centroids for layer in self.plan.layers}
        given = GivenCodes(codes)
        w = self.weights

        def conv(h, name):
            weight, bias = w[f"{name}.weight"], w[f"{name}.bias"]
            if name in planned:
                return given.lut_conv2d(h, planned[name], weight, bias, (1, 1), (1, 1, 1, 1), where=f"layer {name}")
            rows, (n, oh, ow) = ref.im2col_nchw(h, weight.shape[2:], (1, 1), (1, 1, 1, 1))
            out = rows @ weight.reshape(len(weight), -1).T + bias
            return out.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)

        def linear(h, name):
            weight, bias = w[f"{name}.weight"], w[f"{name}.bias"]
            if name in planned:
                return given.lut_matmul(h, planned[name], weight.T, bias, where=f"layer {name}")
            return h @ weight.T + bias

        relu = lambda a: np.maximum(a, 0)  # noqa: E731
        h = relu(conv(x.astype(np.float64), "0"))
        h = relu(conv(h, "2"))
        n, c, hh, ww = h.shape
        h = h.reshape(n, c, hh // 2, 2, ww // 2, 2).max((3, 5))
        h = relu(conv(h, "5"))
        h = relu(linear(h.reshape(n, -1), "8"))
        out = linear(h, "10")
        given.assert_all_used()
        return out

    def assert_matches(self, y, device_codes):
        """``y`` (this model's output on ``x``, run on the device) equals the reference run with
        ``device_codes`` (the ``digits_codes`` fixture: the tapped copy's output and codes there)."""
        tapped_y, codes = device_codes
        assert y.shape == tapped_y.shape
        np.testing.assert_allclose(y, tapped_y, **LUT_TOL)  # the same kernels: the same codes
        np.testing.assert_allclose(y, self.reference(self.x, codes), **LUT_TOL)


@pytest.fixture(scope="session")
def digits():
    return DigitsCase()


@pytest.fixture(scope="session")
def digits_lib(digits, cross_linker, tmp_path_factory):
    """The arm64 digits model exported as a cross-linked shared library."""
    path = digits.arm64.export(tmp_path_factory.mktemp("arm64") / "digits_lut.so")
    assert path.suffix == ".so", digits.arm64.export_message
    return path


@pytest.fixture(scope="session")
def digits_codes(digits, arm64_device, cross_linker, tmp_path_factory):
    """``(output, codes)`` of the digits model compiled with its codes tapped, run on the device."""
    del cross_linker
    compiled = digits.tapped.compiled
    path = compiled.export(tmp_path_factory.mktemp("arm64_codes") / "digits_codes.so")
    assert path.suffix == ".so", compiled.export_message
    with arm64_device.connect() as session:
        outputs = session.load_library(path, compiled.info)(digits.x)
    return digits.tapped.split(outputs)
