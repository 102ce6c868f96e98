"""Build one case folder: the quantized layer, the expected output, our kernel and the ONNX peers.

A case is one linear layer ``y = x @ W`` (``W [K, N]``) at ``M`` rows and ``bits`` (1, 2, 4,
``ternary``). The weight is drawn as integers over the whole ``bits`` range (1-bit {-1, +1},
ternary {-1, 0, +1}) times a seeded per-column scale, so every peer quantizes the same float
weight; the input is seeded standard normal and its int8 scale is ``max|x| / 127``.
``expected.npy`` is the NumPy integer reference (``lut_tvm.exact.reference``, exact), which
the timing worker compares our output with bit for bit.

Peers (ONNX, from the float layer ``x @ W``): ``fp32``; ``int8_dynamic`` (ONNX Runtime
``quantize_dynamic``); ``int8_static`` (QDQ, calibrated on the input); ``nbits4`` / ``nbits2``
(``MatMulNBitsQuantizer``, block 32, symmetric, ``accuracy_level`` 4: int8 activations).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lut_tvm.files import write_json_atomic

NBITS_BLOCK = 32
NBITS_ACCURACY = 4  # int8 activations: MatMulNBits' fastest CPU path


@dataclass(frozen=True)
class Case:
    """One benchmarked layer."""

    name: str
    rows: int
    depth: int
    cols: int
    bits: object  # 1, 2, 4 or "ternary"

    @property
    def stored_bits(self) -> int:
        return 2 if self.bits == "ternary" else int(self.bits)

    @property
    def slug(self) -> str:
        return f"{self.name}_m{self.rows}_{self.depth}x{self.cols}_b{self.bits}"


def default_cases(quick: bool = False) -> list[Case]:
    """GEMV 4096x4096 at 1/2/4 bits and ternary; MiniLM 384x384 and 1536x384 at M = 128, 2/4 bits."""
    gemv = 1024 if quick else 4096
    cases = [Case("gemv", 1, gemv, gemv, b) for b in (1, 2, 4, "ternary")]
    cases += [Case("minilm", 128, d, n, b) for d, n in ((384, 384), (1536, 384)) for b in (2, 4)]
    return cases


def layer_weights(case: Case, seed: int = 0):
    """``(W float32 [K, N], Wq int8, w_scale float32 [N])`` with ``W = Wq * w_scale``."""
    rng = np.random.default_rng(seed)
    shape = (case.depth, case.cols)
    if case.bits == "ternary":
        wq = rng.integers(-1, 2, shape)
    elif case.bits == 1:
        wq = np.where(rng.random(shape) < 0.5, -1, 1)
    else:
        wq = rng.integers(-(2 ** (case.stored_bits - 1)), 2 ** (case.stored_bits - 1), shape)
    scale = (rng.random(case.cols) * 0.02 + 0.01).astype(np.float32)
    return (wq * scale[None]).astype(np.float32), wq.astype(np.int8), scale


def _onnx_matmul(weight: np.ndarray, rows: int, path: Path) -> Path:
    import onnx  # pylint: disable=import-outside-toplevel
    from onnx import TensorProto, helper, numpy_helper  # pylint: disable=import-outside-toplevel

    depth, cols = weight.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, depth])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, cols])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def _nbits(source: Path, path: Path, bits: int) -> Path:
    import onnx  # pylint: disable=import-outside-toplevel
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer  # pylint: disable=C0415

    quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), bits=bits, block_size=NBITS_BLOCK,
                                     is_symmetric=True, accuracy_level=NBITS_ACCURACY)
    quantizer.process()
    quantizer.model.save_model_to_file(str(path))
    if not any(node.op_type == "MatMulNBits" for node in onnx.load(str(path)).graph.node):
        raise RuntimeError(f"MatMulNBitsQuantizer made no MatMulNBits node at {bits} bits")
    return path


def build_peers(case: Case, weight: np.ndarray, example: np.ndarray, folder: Path) -> dict:
    """``{peer: file name or "not built: <reason>"}``."""
    from benchmarks.common.peers import failure_text, quantize_int8, quantize_static_int8  # pylint: disable=C0415

    fp32 = _onnx_matmul(weight, case.rows, folder / "fp32.onnx")
    builders = {
        "int8_dynamic": lambda p: quantize_int8(fp32, p),
        "int8_static": lambda p: quantize_static_int8(fp32, p, example, case.rows),
        "nbits4": lambda p: _nbits(fp32, p, 4),
        "nbits2": lambda p: _nbits(fp32, p, 2),
    }
    peers = {"fp32": fp32.name}
    for name, build in builders.items():
        try:
            peers[name] = build(folder / f"{name}.onnx").name
        except Exception as err:  # pylint: disable=broad-except
            peers[name] = f"not built: {failure_text(err)}"
    return peers


def build_tmac_layer(wq, bits: int, input_shape, act_scale: float, out_scale, target, path: Path) -> dict:
    """Our kernel for ``wq`` compiled for ``target`` and exported to ``path``; returns its form and
    ``inputs`` (the packed weight, out_scale and a zero bias, as the kernel takes them)."""
    import tvm  # pylint: disable=import-outside-toplevel

    from lut_tvm.exact.reference.tmac import pack_tmac  # pylint: disable=import-outside-toplevel
    from lut_tvm.targets import resolve_target  # pylint: disable=import-outside-toplevel
    from schedules.intrin.tmac import tmac_form_for_target  # pylint: disable=import-outside-toplevel
    from schedules.rules.tmac import TmacRule  # pylint: disable=import-outside-toplevel
    from schedules.tmac_compute import tmac_func  # pylint: disable=import-outside-toplevel

    tvm_target = resolve_target(target, num_cores=1)
    form = tmac_form_for_target(tvm_target)
    if form is None:
        raise RuntimeError(f"target {tvm_target} has no T-MAC form (needs AVX2)")
    lanes, word = form
    packed = pack_tmac(wq, bits, lanes, word)
    cols = wq.shape[1]
    func = tmac_func(input_shape, None, bits, packed.padded_groups, cols, lanes, act_scale, word=word)
    sch = TmacRule().apply(func, tvm_target, False)
    tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"), tvm_target).export_library(str(path))
    inputs = {"nibbles": packed.nibbles, "out_scale": np.asarray(out_scale, np.float32),
              "bias_q": np.zeros(cols, np.int32)}
    return {"library": path.name, "lanes": lanes, "word": word, "target": str(tvm_target),
            "form": "vpermw zmm" if word else f"vpshufb {'zmm' if lanes == 64 else 'ymm'}",
            "lookups": int(bits * packed.padded_groups * packed.tiles * lanes * input_shape[0]),
            "inputs": inputs}


def build_case(case: Case, root: Path, target) -> Path:
    """The case folder: ``case.json``, ``x.npy``, ``expected.npy``, ``tmac.so`` + packed inputs, peers."""
    from lut_tvm.exact.reference import dequantize, int_gemm, output_scale, quantize_activations

    folder = root / case.slug
    folder.mkdir(parents=True, exist_ok=True)
    weight, wq, w_scale = layer_weights(case)
    example = np.random.default_rng(1).standard_normal((case.rows, case.depth)).astype(np.float32)
    act_scale = np.float32(np.abs(example).max() / np.float32(127))
    out_scale = output_scale(act_scale, w_scale)
    expected = dequantize(int_gemm(quantize_activations(example, act_scale), wq), out_scale)
    np.save(folder / "x.npy", example)
    np.save(folder / "expected.npy", expected)
    layer = build_tmac_layer(wq, case.stored_bits, (case.rows, case.depth), float(act_scale), out_scale,
                             target, folder / "tmac.so")
    np.savez(folder / "tmac_inputs.npz", **layer["inputs"])
    meta = {"case": {**asdict(case), "slug": case.slug}, "tmac": {k: v for k, v in layer.items() if k != "inputs"},
            "peers": build_peers(case, weight, example, folder), "act_scale": float(act_scale)}
    write_json_atomic(folder / "case.json", meta)
    return folder


def load_meta(folder: Path) -> dict:
    return json.loads((folder / "case.json").read_text())
