"""Import a model into Relax with TVM's own frontends: torch.export for modules, from_onnx for files.

Also records the model's own name of each weight by fingerprint, so that plans and messages
can call a layer what the user calls it (``features.3``, not ``matmul_7``).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from relay_passes.conv1d_as_conv2d import Conv1dAsConv2d
from relay_passes.shared_weight_matmul import SharedWeightMatmul

from . import _tvm_compat
from .errors import ModelLoadError
from .weights import fingerprint


@dataclass
class ImportedModel:
    """A Relax module with constants folded, its input names/shapes, and weight names."""

    mod: tvm.IRModule
    input_names: list[str]
    input_shapes: list[tuple[int, ...]]
    weight_names: dict[str, str] = field(default_factory=dict)
    source: str = ""


def _canonical_names(named_arrays) -> dict[str, str]:
    """Fingerprint -> name, for both a weight and its transpose (dense weights are [N, D] in torch)."""
    names = {}
    for name, array in named_arrays:
        if array.ndim == 2:
            names.setdefault(fingerprint(array.T), name)
        if array.ndim == 3:  # a conv1d weight, seen as the [O, I, 1, k] conv2d weight (Conv1dAsConv2d)
            names.setdefault(fingerprint(array[:, :, None, :]), name)
        names.setdefault(fingerprint(array), name)
    return names


def _as_tuple(example_inputs) -> tuple:
    if example_inputs is None:
        return ()
    return tuple(example_inputs) if isinstance(example_inputs, (list, tuple)) else (example_inputs,)


def from_torch(module, example_inputs) -> ImportedModel:
    """Import a ``torch.nn.Module`` through ``torch.export`` and Relax's exported-program frontend."""
    import torch  # pylint: disable=import-outside-toplevel

    inputs = tuple(torch.as_tensor(np.asarray(x)) for x in _as_tuple(example_inputs))
    if not inputs:
        raise ModelLoadError("compiling a torch.nn.Module needs example_inputs (one per input)")
    module = module.eval()
    try:
        with torch.no_grad():
            exported = torch.export.export(module, inputs)
    except Exception as err:
        raise ModelLoadError(f"torch.export failed for {type(module).__name__}: {err}") from None
    return _from_exported(exported, type(module).__name__,
                          [(n, p.detach().cpu().numpy()) for n, p in module.state_dict().items()])


def from_exported_program_file(path: Path) -> ImportedModel:
    """Import a ``torch.export.save``'d ``.pt2`` file."""
    import torch  # pylint: disable=import-outside-toplevel

    export_log = logging.getLogger("torch.export")  # logs the whole traceback of a bad file
    level = export_log.level
    export_log.setLevel(logging.CRITICAL)
    try:
        exported = torch.export.load(str(path))
    except Exception as err:  # torch raises many types for corrupt or newer-version files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f"{str(path)!r} is not a .pt2 file this torch {torch.__version__} can "
                             f"load (corrupt, or saved by another torch version?): {reason}") from None
    finally:
        export_log.setLevel(level)
    weights = [(n, t.detach().cpu().numpy()) for n, t in exported.state_dict.items()]
    return _from_exported(exported, str(path), weights)


def _from_exported(exported, source: str, named_weights) -> ImportedModel:
    from tvm.relax.frontend.torch import from_exported_program  # pylint: disable=import-outside-toplevel

    try:
        mod = from_exported_program(exported, keep_params_as_input=False)
    except AssertionError as err:  # how the frontend reports ops it has no converter for
        ops = re.findall(r"'([\w.]+)'", str(err))
        if not str(err).startswith("Unsupported function type") or not ops:
            raise ModelLoadError(f"TVM's PyTorch frontend could not import {source}: {err}") from None
        raise ModelLoadError(f"{source} uses op(s) {', '.join(ops)} that TVM's PyTorch frontend "
                             "cannot import; replace them in the model, or export it to ONNX") from None
    return _finish(mod, source, _canonical_names(named_weights))


def from_onnx_file(path: Path, example_inputs: tuple = ()) -> ImportedModel:
    """Import an ONNX file with Relax's ONNX frontend (example inputs fix dynamic dims)."""
    import onnx  # pylint: disable=import-outside-toplevel
    from onnx import numpy_helper  # pylint: disable=import-outside-toplevel
    from tvm.relax.frontend.onnx import from_onnx  # pylint: disable=import-outside-toplevel

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as err:
        raise ModelLoadError(f"{str(path)!r} is not a valid ONNX model: {err}") from None
    initializers = {init.name for init in model.graph.initializer}
    graph_inputs = [i.name for i in model.graph.input if i.name not in initializers]
    input_shapes = {name: np.shape(x) for name, x in zip(graph_inputs, example_inputs)} or None
    _check_example_shapes(model, path, input_shapes or {})
    try:
        mod = from_onnx(model, shape_dict=input_shapes, keep_params_in_input=False)
    except Exception as err:
        raise ModelLoadError(f"TVM's ONNX frontend could not import {str(path)!r}: {err}") from None
    names = _onnx_weight_names(model.graph)
    weights = [(names[init.name], numpy_helper.to_array(init)) for init in model.graph.initializer]
    return _finish(mod, str(path), _canonical_names(weights))


def _onnx_weight_names(graph) -> dict[str, str]:
    """Initializer name -> the name to call its layer by. torch.onnx names the transposed weight
    of a Linear without bias ``onnx::MatMul_12``; its MatMul node keeps the module's scope
    (``/enc/linear1/MatMul``), which gives ``enc.linear1.weight``, the PyTorch name."""
    names = {init.name: init.name for init in graph.initializer}
    for node in graph.node:
        scope = node.name.strip("/").split("/")[:-1]
        for name in node.input:
            if name in names and names[name] == name and name.startswith("onnx::") and scope:
                names[name] = ".".join(scope) + ".weight"
    return names


def _onnx_dims(value_info) -> list:
    """An ONNX input's declared dims: ints where fixed, the dim's name (or ``?``) where dynamic."""
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def _check_example_shapes(model, path: Path, shapes: dict) -> None:
    """ModelLoadError naming the input whose example shape contradicts a fixed non-batch dim (or the
    rank) the ONNX file declares: the frontend would fail deep inside with a shape error of some op."""
    for value_info in model.graph.input:
        if value_info.name not in shapes or not value_info.type.tensor_type.HasField("shape"):
            continue
        declared, given = _onnx_dims(value_info), list(shapes[value_info.name])
        if len(declared) != len(given) or any(
                isinstance(want, int) and want != got for want, got in zip(declared[1:], given[1:])):
            raise ModelLoadError(
                f"{str(path)!r}: input {value_info.name!r} is [{', '.join(map(str, declared))}], but "
                f"the data given for it (example or calibration samples) has shape {given}")


def _finish(mod: tvm.IRModule, source: str, weight_names: dict[str, str]) -> ImportedModel:
    # conv1d: a height-1 conv2d site; a matmul against a broadcast weight (MultiheadAttention's in_proj): a dense site
    mod = SharedWeightMatmul()(Conv1dAsConv2d()(relax.transform.FoldConstant()(mod)))
    main = mod["main"]
    names = [_tvm_compat.var_name(param) for param in main.params]
    shapes = []
    for param in main.params:
        try:
            shapes.append(tuple(int(d) for d in param.ty.shape.values))
        except (TypeError, AttributeError):
            raise ModelLoadError(
                f"{source}: input {_tvm_compat.var_name(param)!r} has a dynamic shape "
                f"{_shape_text(param)}; fix it with an example input: `lut-tvm plan --batch N`, "
                "`lut-tvm compile/tune --example X.npy`, or example_inputs= in Python") from None
    return ImportedModel(mod, names, shapes, weight_names, source)


def _shape_text(param) -> str:
    try:
        # a fixed dim is an IntImm (``.value``; str gives ``T.int64(12)``), a dynamic one a Var
        return "[" + ", ".join(str(getattr(d, "value", d)) for d in param.ty.shape.values) + "]"
    except (TypeError, AttributeError):
        return "(unknown rank)"


def import_model(model, example_inputs=None) -> ImportedModel:
    """Import a torch module, an ``.onnx`` path or a ``.pt2`` path into Relax."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise ModelLoadError(f"model file {str(path)!r} does not exist")
        if path.stat().st_size == 0:  # an interrupted download or copy; the parsers' messages hide it
            raise ModelLoadError(f"model file {str(path)!r} is empty (0 bytes)")
        if path.suffix == ".pt2":
            return from_exported_program_file(path)
        return from_onnx_file(path, _as_tuple(example_inputs))
    if type(model).__module__.startswith("torch") or hasattr(model, "state_dict"):
        return from_torch(model, example_inputs)
    raise ModelLoadError(f"cannot import a {type(model).__name__}: pass a torch.nn.Module, "
                         "an .onnx file or a torch.export .pt2 file")
