"""The exceptions lut_tvm raises for bad input: each message names the file, layer or field at fault.

``lut_tvm._tvm_compat`` registers each class with TVM's FFI, so that one raised inside a
pass comes out of ``tvm.transform`` as itself, not as a RuntimeError.
"""


class LutTvmError(Exception):
    """Base class of every error lut_tvm reports to its users."""


class PlanError(LutTvmError):
    """A LUT plan file is malformed, invalid, or does not fit the model."""


class ModelLoadError(LutTvmError):
    """A model file could not be read or imported."""


class TargetError(LutTvmError):
    """A target name or dict is not one lut_tvm can compile for."""


class ArtifactError(LutTvmError):
    """A compiled artifact or its inputs are missing or do not match."""
