"""A compiled model: call it on NumPy arrays, export it to a shared library, load it back."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import _tvm_compat
from .errors import ArtifactError
from .files import temp_path_beside
from .model_io import checked_inputs, flatten_outputs, refuse_non_finite

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


# Besides ArtifactInfo's fields, the description records the library's size and SHA-256, so
# that a library and a description from two different exports are never taken for a pair.
_PAIR_FIELDS = ("library_size", "library_sha256")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _folder_lock(folder: Path, exclusive: bool):
    """An advisory lock on ``folder`` (flock on the folder itself, no lock file left behind):
    an export holds it exclusively while it publishes a library and its description, a load
    shared while it reads them, so a reader never sees one export's library with another's
    description."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:  # an unreadable folder: no lock (the size/hash check still catches a mix)
        yield
        return
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except OSError:  # a file system without flock: the size/hash check remains
            pass
        yield
    finally:
        os.close(handle)  # releases the lock


class CompiledModel:
    """A Relax VM executable plus its ArtifactInfo; call it with one NumPy array per input."""

    def __init__(self, executable, info: ArtifactInfo):
        self.executable = executable
        self.info = info
        self._vm = None
        self.export_message = ""
        self.tuning = None  # the AppliedLog compile applied (lut_tvm.tuning.logs), or None

    @property
    def vm(self):
        """The VM, created on first use (so exporting a cross-compiled model never starts one)."""
        if self._vm is None:
            self._vm = _tvm_compat.virtual_machine(self.executable)
        return self._vm

    def __call__(self, *inputs, check_finite: bool = True):
        """Run the model; returns one NumPy array, or a tuple for several outputs.

        Inputs holding NaN or infinity are refused (ArtifactError): a LUT layer encodes them to
        some centroid and would return finite, meaningless outputs where PyTorch gives NaN.
        ``check_finite=False`` skips the check (one pass over the inputs)."""
        arrays = checked_inputs(self.info, inputs)
        if check_finite:
            refuse_non_finite(self.info, arrays)
        args = [_tvm_compat.to_device(a) for a in arrays]
        outputs = flatten_outputs(self.vm["main"](*args))
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def benchmark(self, *inputs, number: int = 10, repeat: int = 5) -> float:
        """Median seconds per run, from TVM's time evaluator."""
        args = [_tvm_compat.to_device(a) for a in checked_inputs(self.info, inputs)]
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
        sidecar = sidecar_path(path)
        tmp_lib = temp_path_beside(path, path.suffix or ".so")  # the suffix picks the format
        tmp_meta = None
        try:
            fcompile = choice.linker.fcompile() if choice.linker is not None else None
            with _tvm_compat.quiet_native_log():  # TVM logs a "Scope Saving" line per function
                _tvm_compat.export_library(self.executable, str(tmp_lib), fcompile)
            meta = {"format": ARTIFACT_FORMAT, "version": ARTIFACT_VERSION, **asdict(self.info),
                    "library_size": tmp_lib.stat().st_size, "library_sha256": _file_sha256(tmp_lib)}
            tmp_meta = temp_path_beside(sidecar)
            tmp_meta.write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
            with _folder_lock(path.parent, exclusive=True):
                os.replace(tmp_lib, path)
                os.replace(tmp_meta, sidecar)
        finally:
            for tmp in (tmp_lib, tmp_meta):
                if tmp is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
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


def read_artifact_info(path: str | os.PathLike) -> ArtifactInfo:
    """The ArtifactInfo in the ``.json`` description beside a library written by ``export``."""
    path = Path(path)
    with _folder_lock(path.parent, exclusive=False):
        return _read_description(path)[0]


def _read_description(path: Path) -> tuple[ArtifactInfo, dict]:
    """``(info, the size/hash fields)`` of the description of ``path``; call under the folder lock."""
    if not path.is_file():
        raise ArtifactError(f"compiled model {str(path)!r} does not exist")
    meta_path = sidecar_path(path)
    if not meta_path.is_file() and path.suffix in (".onnx", ".pt2"):
        raise ArtifactError(f"{str(path)!r} is a model file, not a compiled model: compile it first "
                            "(`lut-tvm compile` / lut_tvm.compile) and give the library it writes")
    if not meta_path.is_file():
        raise ArtifactError(f"{str(meta_path)!r} is missing: it describes the inputs of {str(path)!r}")
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != ARTIFACT_FORMAT or meta.get("version") != ARTIFACT_VERSION:
            raise ValueError(f"format/version {meta.get('format')}/{meta.get('version')}")
        pair = {k: meta.pop(k) for k in _PAIR_FIELDS if k in meta}
        info = ArtifactInfo(**{k: v for k, v in meta.items() if k not in ("format", "version")})
    except (ValueError, TypeError, AttributeError) as err:
        raise ArtifactError(f"{str(meta_path)!r} is not a lut_tvm artifact description: {err}") from None
    size = pair.get("library_size")
    if size is not None and (path.stat().st_size != size or _file_sha256(path) != pair.get("library_sha256")):
        raise ArtifactError(f"{str(path)!r} is not the library that {str(meta_path)!r} describes "
                            "(its size or SHA-256 differs: replaced since it was exported?); "
                            "export the model again")
    return info, pair


def load(path: str | os.PathLike) -> CompiledModel:
    """Load a model written by ``CompiledModel.export`` (checked against its description).

    The library is opened through a private name (a hard link, or a copy where the folder is
    read-only), removed once loaded: ``dlopen`` returns the library it already has open under a
    path, so loading a path again after a new export would otherwise run the old code."""
    path = Path(path)
    with _folder_lock(path.parent, exclusive=False):
        info, _ = _read_description(path)
        private_dir = None
        try:
            private = temp_path_beside(path, path.suffix or ".so")
            os.unlink(private)
            os.link(path, private)
        except OSError:
            private_dir = Path(tempfile.mkdtemp(prefix="lut_tvm_load_"))
            private = private_dir / path.name
            shutil.copyfile(path, private)
    try:
        with _tvm_compat.quiet_native_log():  # TVM logs a "Scope Loaded" line per function
            executable = _tvm_compat.load_module(str(private))
    except Exception as err:
        raise ArtifactError(f"could not load {str(path)!r}: {err}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(private)
        if private_dir is not None:
            shutil.rmtree(private_dir, ignore_errors=True)
    return CompiledModel(executable, info)
