"""A compiled model: call it on NumPy arrays, export it to a shared library, load it back."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import _tvm_compat
from .errors import ArtifactError
from .files import write_json_atomic

LOG = logging.getLogger("lut_tvm")

ARTIFACT_FORMAT = "lut_tvm.artifact"
ARTIFACT_VERSION = 1


@dataclass
class ArtifactInfo:
    """What a compiled model needs besides its code: inputs, target and the LUT layers in it."""

    input_names: list[str]
    input_shapes: list[list[int]]
    target: str
    lut_layers: list[str] = field(default_factory=list)
    source: str = ""
    tvm_version: str = _tvm_compat.TVM_VERSION
    tuning_log: str = ""  # the applied tuning log and how many functions it scheduled, or ""
    # GELU/softmax/exp/erf/tanh in TVM's fast forms (compile's fast_math; False for artifacts
    # written before the field existed, which were compiled without them)
    fast_math: bool = False


def sidecar_path(path: Path) -> Path:
    """Where the JSON description of an exported library lives (``model.so`` -> ``model.so.json``)."""
    return path.with_name(path.name + ".json")


class CompiledModel:
    """A Relax VM executable plus its ArtifactInfo; call it with one NumPy array per input."""

    def __init__(self, executable, info: ArtifactInfo):
        self.executable = executable
        self.info = info
        self._vm = None
        self.export_message = ""

    @property
    def vm(self):
        """The VM, created on first use (so exporting a cross-compiled model never starts one)."""
        if self._vm is None:
            self._vm = _tvm_compat.virtual_machine(self.executable)
        return self._vm

    def _check_inputs(self, inputs) -> list[np.ndarray]:
        if len(inputs) != len(self.info.input_names):
            raise ArtifactError(f"model takes {len(self.info.input_names)} input(s) "
                                f"{self.info.input_names}, got {len(inputs)}")
        arrays = []
        for name, shape, value in zip(self.info.input_names, self.info.input_shapes, inputs):
            array = np.asarray(value, dtype=np.float32)
            if list(array.shape) != list(shape):
                raise ArtifactError(f"input {name!r} has shape {list(array.shape)}, "
                                    f"the model was compiled for {list(shape)}")
            arrays.append(array)
        return arrays

    def __call__(self, *inputs):
        """Run the model; returns one NumPy array, or a tuple for several outputs."""
        args = [_tvm_compat.to_device(a) for a in self._check_inputs(inputs)]
        outputs = _flatten(self.vm["main"](*args))
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def benchmark(self, *inputs, number: int = 10, repeat: int = 5) -> float:
        """Median seconds per run, from TVM's time evaluator."""
        args = [_tvm_compat.to_device(a) for a in self._check_inputs(inputs)]
        timer = self.vm.time_evaluator("main", _tvm_compat.cpu_device(), number=number, repeat=repeat)
        return float(np.median(timer(*args).results))

    def export(self, path: str | os.PathLike, *, cc=None, ndk=None) -> Path:
        """Write the library and its ``.json`` description, each atomically; returns the path.

        For a cross target (``arm64``, ``android-arm64``) the library is linked by a cross
        linker when one is found (``cc``, an NDK at ``ndk``, ... see ``lut_tvm.deploy.linker``);
        if none is, a ``.tar`` of the unlinked objects is written instead (``path`` with the
        suffix ``.tar``). ``export_message`` says which was written and why.
        """
        from .deploy.linker import ExportPlan, plan_export  # pylint: disable=import-outside-toplevel

        path = Path(path)
        if path.suffix == ".tar":
            choice = ExportPlan("tar", None, "a .tar was asked for")
        else:
            choice = plan_export(self.info.target, cc=cc, ndk=ndk)
            if choice.kind == "tar":
                path = path.with_suffix(".tar")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_lib = path.with_name(f".{path.name}.tmp{path.suffix}")
        fcompile = choice.linker.fcompile() if choice.linker is not None else None
        _tvm_compat.export_library(self.executable, str(tmp_lib), fcompile)
        os.replace(tmp_lib, path)
        meta = {"format": ARTIFACT_FORMAT, "version": ARTIFACT_VERSION, **asdict(self.info)}
        write_json_atomic(sidecar_path(path), meta, indent=2)
        self.export_message = choice.describe(path)
        if choice.kind == "tar" and path.suffix == ".tar" and choice.reason != "a .tar was asked for":
            LOG.warning("%s", self.export_message)
        else:
            LOG.info("%s", self.export_message)
        return path

    def deploy(self, session, **connect_kwargs):
        """This model on a device: ``session`` is a ``lut_tvm.deploy.RemoteSession`` or an
        address ``"HOST:PORT"`` (then ``connect_kwargs`` go to ``lut_tvm.deploy.connect``).
        Returns a ``RemoteModel``: call it with NumPy arrays, ``.benchmark(...)`` it there."""
        from .deploy.session import connect  # pylint: disable=import-outside-toplevel

        if isinstance(session, str):
            session = connect(session, **connect_kwargs)
        return session.load(self)


def _flatten(result) -> list[np.ndarray]:
    if hasattr(result, "numpy"):
        return [result.numpy()]
    return [array for item in result for array in _flatten(item)]


def read_artifact_info(path: str | os.PathLike) -> ArtifactInfo:
    """The ArtifactInfo in the ``.json`` description beside a library written by ``export``."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"compiled model {str(path)!r} does not exist")
    meta_path = sidecar_path(path)
    if not meta_path.is_file():
        raise ArtifactError(f"{str(meta_path)!r} is missing: it describes the inputs of {str(path)!r}")
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != ARTIFACT_FORMAT or meta.get("version") != ARTIFACT_VERSION:
            raise ValueError(f"format/version {meta.get('format')}/{meta.get('version')}")
        return ArtifactInfo(**{k: v for k, v in meta.items() if k not in ("format", "version")})
    except (ValueError, TypeError) as err:
        raise ArtifactError(f"{str(meta_path)!r} is not a lut_tvm artifact description: {err}") from None


def load(path: str | os.PathLike) -> CompiledModel:
    """Load a model written by ``CompiledModel.export``."""
    path = Path(path)
    info = read_artifact_info(path)
    try:
        executable = _tvm_compat.load_module(str(path))
    except Exception as err:
        raise ArtifactError(f"could not load {str(path)!r}: {err}") from None
    return CompiledModel(executable, info)
