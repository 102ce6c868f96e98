"""On the emulated ARM64 device (a real aarch64 TVM RPC server under qemu on loopback): the digits
CNN with a LUT plan compiled for arm64 runs remotely and equals the NumPy reference; the NEON
``tbl`` lookup kernel runs there exactly; remote bench completes; the CLI does the same.

Times measured here are qemu's, not a phone's: the outputs checked below say so.
"""

from __future__ import annotations

import json

import numpy as np

from lut_tvm import _tvm_compat
from lut_tvm.deploy import EMULATED_NOTE, BenchResult


def _tbl_lines(asm: str) -> list[str]:
    return [line for line in asm.splitlines() if line.split()[:1] == ["tbl"]]


def test_arm64_lut_model_assembly_uses_neon_tbl(digits):
    """The LUT lookup of the compiled model is the byte-shuffle kernel: NEON tbl instructions."""
    assert [layer.name for layer in digits.plan.layers] == digits.arm64.info.lut_layers != []
    asm = _tvm_compat.executable_assembly(digits.arm64.executable)
    lines = _tbl_lines(asm)
    assert lines, "no tbl instruction in the arm64 LUT model"
    assert all(".16b" in line for line in lines)  # 16-byte table, 16 lanes


def test_device_reports_it_is_emulated(arm64_device):
    with arm64_device.connect() as session:
        assert session.info["machine"] == "aarch64"
        assert session.info["qemu_cpu"] == "cortex-a72"
        assert session.emulated and EMULATED_NOTE in session.describe()


def test_lut_digits_cnn_on_arm64_device_equals_numpy_reference(digits, digits_lib, arm64_device, digits_codes):
    with arm64_device.connect() as session:
        remote = session.load_library(digits_lib, digits.arm64.info)
        y = remote(digits.x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    digits.assert_matches(y, digits_codes)
    # the LUT approximation is visible: this is not the dense model
    import torch

    with torch.no_grad():
        dense = digits.model(torch.from_numpy(digits.x)).numpy()
    assert np.abs(y - dense).max() > 1e-3


def test_compiled_deploy_api(digits, arm64_device, cross_linker, digits_codes):
    """``compiled.deploy(address)`` exports, uploads, loads; the remote model returns NumPy."""
    del cross_linker
    remote = digits.arm64.deploy(arm64_device.address)
    try:
        digits.assert_matches(remote(digits.x), digits_codes)
        assert "aarch64-linux-gnu-g++" in digits.arm64.export_message
    finally:
        remote.session.close()


def test_neon_tbl_kernel_runs_exactly_on_device(arm64_device, cross_linker, tmp_path):
    """The shuffle lookup kernel compiled for arm64 (asm has tbl) gives the exact table sums there."""
    import tvm

    from schedules.lut_shuffle_compute import lookup_dense_shuffle_func
    from schedules.rules.lut_lookup_shuffle import LutLookupShuffleRule

    del cross_linker
    rows, codebooks, out = 128, 24, 32
    target = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
    sch = LutLookupShuffleRule().apply(lookup_dense_shuffle_func(rows, codebooks, out, False), target, False)
    ex = tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"), target)
    assert _tbl_lines(ex.mod.inspect_source("asm"))
    from lut_tvm.deploy.linker import plan_export

    lib = tmp_path / "lookup.so"
    ex.export_library(str(lib), fcompile=plan_export(target).linker.fcompile())

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 16, (rows, codebooks)).astype(np.uint8)
    tables = rng.integers(-127, 128, (codebooks, 16, out)).astype(np.int8)
    scale = rng.random(out).astype(np.float32) + 0.5
    bias = rng.standard_normal(out).astype(np.float32)
    acc = tables[np.arange(codebooks)[None, :], codes.astype(np.int64), :].astype(np.int64).sum(1)
    expected = (acc * scale.astype(np.float64) + bias).astype(np.float32)

    with arm64_device.connect() as session:
        name = session.upload(lib)
        module = session.step("load", lambda: session._live().load_module(name))  # noqa: SLF001
        dev = session.device
        args = [np.ascontiguousarray(codes.T), np.ascontiguousarray(tables.transpose(2, 0, 1)),
                scale, bias, np.zeros((rows, out), np.float32)]
        tensors = [_tvm_compat.to_device(a, dev) for a in args]
        session.step("run lookup", lambda: module["main"](*tensors))
        y = tensors[-1].numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-4)


def test_remote_bench_completes_and_is_labelled_emulated(digits, digits_lib, arm64_device):
    with arm64_device.connect() as session:
        remote = session.load_library(digits_lib, digits.arm64.info)
        result = remote.benchmark(digits.x, number=2, repeat=3)
    assert isinstance(result, BenchResult) and result.emulated
    assert len(result.repeats_s) == 3 and result.median_s > 0
    assert result.median_s == float(np.median(result.repeats_s))
    summary = result.summary()
    assert "median latency" in summary and EMULATED_NOTE in summary and "cortex-a72" in summary
    print(summary)


def test_cli_run_and_bench_over_rpc(digits, digits_lib, arm64_device, digits_codes, tmp_path, capsys):
    from lut_tvm.cli import main

    x_path = tmp_path / "x.npy"
    np.save(x_path, digits.x)
    out = tmp_path / "y.npy"
    assert main(["run", str(digits_lib), str(x_path), "-o", str(out), "--rpc", arm64_device.address,
                 "--time"]) == 0
    printed = capsys.readouterr().out
    assert "aarch64" in printed and EMULATED_NOTE in printed and "median latency" in printed
    digits.assert_matches(np.load(out), digits_codes)

    assert main(["bench", str(digits_lib), "--rpc", arm64_device.address, "--number", "1",
                 "--repeat", "2"]) == 0
    printed = capsys.readouterr().out
    assert "median latency" in printed and EMULATED_NOTE in printed and "2 repeats x 1 runs" in printed
    print(printed)


def test_cli_rejects_a_tar_for_the_device(digits, arm64_device, tmp_path, capsys):
    from lut_tvm.cli import main

    tar = digits.arm64.export(tmp_path / "digits.tar")
    x_path = tmp_path / "x.npy"
    np.save(x_path, digits.x)
    assert main(["run", str(tar), str(x_path), "--rpc", arm64_device.address]) == 2
    assert "unlinked objects" in capsys.readouterr().err


def test_device_status_lists_the_device(arm64_device, capsys):
    from lut_tvm.cli import main

    assert main(["device", "status", "--cache-dir", arm64_device.cache]) == 0
    assert arm64_device.address in capsys.readouterr().out
    state = json.loads((__import__("pathlib").Path(arm64_device.cache)
                        / f"server-{arm64_device.port}.json").read_text())
    assert state["pid"] == arm64_device.pid
