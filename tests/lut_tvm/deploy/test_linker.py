"""Export for cross targets: which linker writes the .so, or a .tar of objects, and the message
saying which and why. No device needed."""

from __future__ import annotations

import stat
import tarfile

import numpy as np
import pytest

import lut_tvm
from lut_tvm.deploy import linker
from lut_tvm.targets import resolve_target

ELF_MACHINE_AARCH64 = 183


def _elf_machine(path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return int.from_bytes(header[18:20], "little")


@pytest.fixture(scope="module")
def tiny_arm64():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    x = np.random.default_rng(0).random((8, 16), dtype=np.float32)
    return lut_tvm.compile(model, None, target="arm64", example_inputs=(x,)), model, x


def test_host_target_uses_the_host_compiler():
    choice = linker.plan_export(resolve_target("x86-avx2"))
    assert (choice.kind, choice.linker) == ("so", None)


def test_arm64_prefers_aarch64_gxx(monkeypatch):
    monkeypatch.setattr(linker.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.delenv("LUT_TVM_CROSS_CXX", raising=False)
    choice = linker.plan_export(resolve_target("arm64"))
    assert choice.kind == "so" and choice.linker.name == "aarch64-linux-gnu-g++"
    assert "aarch64-linux-gnu-g++" in choice.describe("m.so")


def test_arm64_falls_back_to_zig_then_tar(monkeypatch):
    monkeypatch.setattr(linker.shutil, "which", lambda name: None)
    monkeypatch.delenv("LUT_TVM_CROSS_CXX", raising=False)
    monkeypatch.setattr(linker, "zig_linker", lambda triple: linker.Linker("zig", ["zig", "cc"]))
    assert linker.plan_export(resolve_target("arm64")).linker.name == "zig"

    monkeypatch.setattr(linker, "zig_linker", lambda triple: None)
    choice = linker.plan_export(resolve_target("arm64"))
    assert choice.kind == "tar" and choice.linker is None
    message = choice.describe("m.tar")
    assert "unlinked objects" in message
    assert "aarch64-linux-gnu-g++" in message and "ziglang" in message  # what was tried


def test_android_uses_the_ndk_clang(tmp_path, monkeypatch):
    for var in ("ANDROID_NDK_HOME", "ANDROID_NDK_ROOT", "ANDROID_NDK", "TVM_NDK_CC", "LUT_TVM_CROSS_CXX"):
        monkeypatch.delenv(var, raising=False)
    choice = linker.plan_export(resolve_target("android-arm64"))
    assert choice.kind == "tar" and "Android NDK" in choice.reason

    bin_dir = tmp_path / "ndk" / "toolchains" / "llvm" / "prebuilt" / "linux-x86_64" / "bin"
    bin_dir.mkdir(parents=True)
    for api in (24, 30):
        clang = bin_dir / f"aarch64-linux-android{api}-clang++"
        clang.write_text("#!/bin/sh\n")
        clang.chmod(clang.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("ANDROID_NDK_HOME", str(tmp_path / "ndk"))
    choice = linker.plan_export(resolve_target("android-arm64"))
    assert choice.kind == "so" and choice.linker.command == [str(bin_dir / "aarch64-linux-android30-clang++")]
    monkeypatch.setenv("LUT_TVM_ANDROID_API", "24")
    choice = linker.plan_export(resolve_target("android-arm64"))
    assert choice.linker.command == [str(bin_dir / "aarch64-linux-android24-clang++")]


def test_no_cross_linker_writes_a_tar_of_objects(tiny_arm64, tmp_path, monkeypatch, caplog):
    compiled, _, _ = tiny_arm64
    monkeypatch.setattr(linker.shutil, "which", lambda name: None)
    monkeypatch.setattr(linker, "zig_linker", lambda triple: None)
    monkeypatch.delenv("LUT_TVM_CROSS_CXX", raising=False)
    with caplog.at_level("WARNING", logger="lut_tvm"):
        path = compiled.export(tmp_path / "model.so")
    assert path == tmp_path / "model.tar" and path.is_file()
    assert (tmp_path / "model.tar.json").is_file()
    with tarfile.open(path) as tar:
        names = tar.getnames()
    assert names and all(name.endswith(".o") for name in names)
    assert "unlinked objects" in compiled.export_message and "no cross linker" in compiled.export_message
    assert any("unlinked objects" in record.getMessage() for record in caplog.records)


def test_arm64_export_links_an_aarch64_library(tiny_arm64, tmp_path, cross_linker):
    compiled, _, _ = tiny_arm64
    path = compiled.export(tmp_path / "model.so")
    assert path.suffix == ".so"
    assert _elf_machine(path) == ELF_MACHINE_AARCH64
    assert cross_linker in compiled.export_message


def test_zig_links_an_aarch64_library(tiny_arm64, tmp_path):
    zig = linker.zig_linker("aarch64-linux-gnu")
    if zig is None:
        pytest.skip("ziglang is not installed (optional: pip install ziglang)")
    compiled, _, _ = tiny_arm64
    path = compiled.export(tmp_path / "model.so", cc=zig.command)
    assert _elf_machine(path) == ELF_MACHINE_AARCH64


def test_explicit_missing_linker_is_reported(tiny_arm64, tmp_path):
    compiled, _, _ = tiny_arm64
    with pytest.raises(lut_tvm.TargetError, match="no-such-g\\+\\+"):
        compiled.export(tmp_path / "model.so", cc="no-such-g++")


def test_connect_to_nothing_fails_fast_and_names_the_address():
    import socket

    from lut_tvm.deploy import DeviceError, connect

    with socket.socket() as sock:  # a port with no server behind it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DeviceError, match=f"127.0.0.1:{port}: cannot connect"):
        connect(f"127.0.0.1:{port}", connect_timeout=5)
    with pytest.raises(DeviceError, match="--key"):
        connect(tracker=f"127.0.0.1:{port}")


@pytest.mark.parametrize("text, expected", [
    ("10.0.0.2:9000", ("10.0.0.2", 9000)), (":9000", ("127.0.0.1", 9000)),
    ("9000", ("127.0.0.1", 9000)), ("phone", ("phone", 9090)), ("[::1]:9000", ("::1", 9000)),
])
def test_parse_address_defaults_to_loopback(text, expected):
    from lut_tvm.deploy import parse_address

    assert parse_address(text) == expected


def test_parse_address_rejects_garbage():
    from lut_tvm.deploy import DeviceError, parse_address

    with pytest.raises(DeviceError, match="HOST:PORT"):
        parse_address("host:notaport")
