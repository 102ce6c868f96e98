"""Model-zoo cases: the ONNX package's light model-zoo architectures with seeded random weights, batch 1.

The ``onnx`` package ships AlexNet, DenseNet-121, Inception v1/v2, ResNet-50, ShuffleNet,
SqueezeNet, VGG-19 and ZFNet-512 under ``onnx/backend/test/data/light`` with every weight a
``ConstantOfShape`` of 0.02. ``zoo_model`` turns each weight into a seeded random initializer:
conv and Gemm weights He-scaled (normal, std ``sqrt(2 / fan_in)``) so that activations stay
finite through 50+ layers, BatchNorm scale and variance in [0.5, 1.5], means, shifts and biases
small (std 0.05); the graph's inputs are reduced to the image and the final softmax is dropped
(random weights saturate it, which would hide any numerical difference): the models return
logits. Timed like the other model cases: TVM dense (``lut_tvm.compile`` of the ONNX file, no plan) against ONNX Runtime fp32 and dynamic
int8; there is no PyTorch model, so the ONNX Runtime fp32 output (``reference.npy``) is what the
others are checked against.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ZOO_BUILDER = "onnx-zoo"
REFERENCE = "reference.npy"
ZOO_MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
              "squeezenet", "vgg19", "zfnet512")
SMALL_STD = 0.05


def light_model_path(name: str) -> Path:
    """The ``light_<name>.onnx`` file of the installed onnx package."""
    import onnx  # pylint: disable=import-outside-toplevel

    path = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model-zoo file in the installed onnx package "
                                f"(known: {', '.join(ZOO_MODELS)})")
    return path


def _consumers(graph) -> dict:
    """``{tensor name: [(node, input position), ...]}``."""
    found: dict = {}
    for node in graph.node:
        for pos, name in enumerate(node.input):
            found.setdefault(name, []).append((node, pos))
    return found


def _random_weight(shape: tuple, uses: list, consumers: dict, rng: np.random.Generator) -> np.ndarray:
    """A seeded value for a parameter of ``shape`` read at ``uses`` (its role picks the distribution)."""
    node, pos = uses[0]
    if node.op_type == "Unsqueeze":  # DenseNet's BatchNorm as Unsqueeze -> Mul (scale) / Add (shift)
        after = consumers.get(node.output[0], [])
        node, pos = (after[0][0], 1) if after else (node, 0)
        role = "scale" if node.op_type == "Mul" else "shift"
    elif node.op_type in ("Conv", "Gemm") and pos == 1:
        role = "weight"
    elif node.op_type == "BatchNormalization":
        role = {1: "scale", 2: "shift", 3: "shift", 4: "variance"}[pos]
    else:
        role = "shift"
    if role == "weight":
        if node.op_type == "Conv":
            fan_in = int(np.prod(shape[1:]))
        else:
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            fan_in = shape[1] if trans_b else shape[0]
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)
    if role in ("scale", "variance"):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    return rng.normal(0.0, SMALL_STD, shape).astype(np.float32)


def zoo_model(name: str, seed: int = 0):
    """The ``light_<name>`` ModelProto with seeded random weights as initializers and one graph input."""
    import onnx  # pylint: disable=import-outside-toplevel
    from onnx import helper, numpy_helper  # pylint: disable=import-outside-toplevel

    model = onnx.load(str(light_model_path(name)))
    graph = model.graph
    rng = np.random.default_rng(seed)
    consumers = _consumers(graph)
    inits = {init.name: init for init in graph.initializer}
    params, keep_nodes = {}, []
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            shape = tuple(int(d) for d in numpy_helper.to_array(inits[node.input[0]]))
            params[node.output[0]] = _random_weight(shape, consumers[node.output[0]], consumers, rng)
        else:
            keep_nodes.append(node)
    for init in graph.initializer:
        value = numpy_helper.to_array(init)
        if value.dtype == np.float32 and init.name in consumers:
            params[init.name] = _random_weight(value.shape, consumers[init.name], consumers, rng)
    used = {name for node in keep_nodes for name in node.input}
    kept_inits = [numpy_helper.from_array(value, key) for key, value in params.items() if key in used]
    kept_inits += [init for init in graph.initializer if init.name not in params and init.name in used]
    init_names = {init.name for init in kept_inits}
    inputs = [inp for inp in graph.input if inp.name not in init_names and inp.name in used]
    if len(inputs) != 1:
        raise ValueError(f"{light_model_path(name)}: expected one image input after replacing the weights, "
                         f"got {[inp.name for inp in inputs]}")
    outputs = list(graph.output)
    if keep_nodes[-1].op_type == "Softmax" and [o.name for o in outputs] == list(keep_nodes[-1].output):
        # random weights saturate the softmax (one class at 1.0): compare and return the logits
        logits = onnx.ValueInfoProto()
        logits.CopyFrom(outputs[0])  # a softmax keeps its input's shape
        logits.name = keep_nodes[-1].input[0]
        outputs = [logits]
        keep_nodes = keep_nodes[:-1]
    new_graph = helper.make_graph(keep_nodes, graph.name, inputs, outputs, kept_inits)
    out = helper.make_model(new_graph, opset_imports=list(model.opset_import), producer_name="lut_tvm zoo")
    out.ir_version = max(model.ir_version, 4)  # IR 4: initializers need not be graph inputs
    onnx.checker.check_model(out)
    return out


def zoo_input(model, seed: int = 1) -> np.ndarray:
    """A seeded image batch of the model's input shape (uniform in [0, 1))."""
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return np.random.default_rng(seed).random(dims, dtype=np.float32)


def prepare_zoo(folder: Path, name: str) -> dict:
    """``model.onnx`` (random weights), ``model_int8.onnx``, ``tvm_dense.so``, ``input.npy``,
    ``reference.npy`` (ONNX Runtime fp32, 1 thread) and ``meta.json`` of one zoo model in ``folder``."""
    import onnx  # pylint: disable=import-outside-toplevel

    from benchmarks.common.peers import compile_tvm, ort_runner, quantize_int8  # pylint: disable=C0415
    from lut_tvm.files import write_json_atomic  # pylint: disable=import-outside-toplevel

    from .prepare import META, _attempt  # pylint: disable=import-outside-toplevel

    folder.mkdir(parents=True, exist_ok=True)
    model = zoo_model(name)
    example = zoo_input(model)
    tmp = folder / ".model.onnx.tmp"
    onnx.save(model, str(tmp))
    tmp.replace(folder / "model.onnx")
    np.save(folder / "input.npy", example)
    reference = np.asarray(ort_runner(folder / "model.onnx", example, 1)()[0])
    if not np.isfinite(reference).all():
        raise ValueError(f"{name}: ONNX Runtime's output with the random weights is not finite")
    np.save(folder / REFERENCE, reference)
    failed: dict = {}
    _attempt(lambda: quantize_int8(folder / "model.onnx", folder / "model_int8.onnx"), "ort_int8", failed)
    built = _attempt(lambda: compile_tvm(folder / "model.onnx", None, example, folder / "tvm_dense.so"),
                     "tvm_dense", failed)
    meta = {"kind": "model", "name": f"{name} (model zoo)", "batch": int(example.shape[0]),
            "torch": {"builder": ZOO_BUILDER}, "input_shape": list(example.shape), "profile": False,
            "weights": "seeded random (He-scaled), onnx/backend/test/data/light architecture",
            "data": "uniform random image", "reference": "onnxruntime fp32 (no PyTorch model)",
            "schedules": {"tvm_dense": built["schedule"]} if built else {}, "lut_variants": {}, "failed": failed}
    write_json_atomic(folder / META, meta)
    return meta


def _zoo_table(cases, timings, threads: int) -> list[str]:
    lines = [f"### Model zoo, {threads} thread(s): median ms per call", "",
             "| model | TVM dense ms | ORT fp32 ms | ORT int8 ms | TVM dense vs ORT fp32 | vs ORT int8 | "
             "TVM error vs ORT fp32 | TVM schedule |", "|" + "---|" * 8]
    for case in cases:
        result = timings[threads]["cases"].get(case["key"])
        if case["kind"] != "zoo" or result is None:
            continue
        ms = result["ms"]

        def cell(name):
            return "-" if ms.get(name) is None else f"{ms[name]:.2f}"

        def ratio(peer):
            return "-" if None in (ms.get(peer), ms.get("tvm_dense")) else f"{ms[peer] / ms['tvm_dense']:.2f}x"

        err = result.get("relative_error_vs_pytorch", {}).get("tvm_dense")
        lines.append(f"| {case['name']} | {cell('tvm_dense')} | {cell('ort_fp32')} | {cell('ort_int8')} | "
                     f"{ratio('ort_fp32')} | {ratio('ort_int8')} | {'-' if err is None else f'{err:.1e}'} | "
                     f"{case.get('schedules', {}).get('tvm_dense', '-')} |")
    return lines + [""]


def zoo_lines(cases, timings) -> list[str]:
    """The ``## Model zoo`` section of ``speed.md``, or nothing when the group did not run."""
    if not any(c["kind"] == "zoo" for c in cases):
        return []
    lines = ["## Model zoo (dense)", "",
             "The ONNX package's model-zoo architectures (`onnx/backend/test/data/light`) with seeded random "
             "He-scaled weights, batch 1, 224x224 (`benchmarks/speed/zoo.py`; the final softmax dropped, so the "
             "outputs are logits). TVM dense = `lut_tvm.compile` of the ONNX file with no plan; ratios = ORT time / "
             "TVM time (> 1: TVM faster). The error is the max abs difference to ONNX Runtime fp32's output over its "
             "max abs value (there is no PyTorch model here).", ""]
    for threads in sorted(timings):
        lines += _zoo_table(cases, timings, threads)
    return lines
