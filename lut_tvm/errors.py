"""The exceptions lut_tvm raises for bad input: each message names the file, layer or field at fault.

Each class is registered with TVM's FFI so that one raised inside a pass comes out of
``tvm.transform`` as itself, not as a RuntimeError.
"""

from ._tvm_compat import register_ffi_error


@register_ffi_error
class LutTvmError(Exception):
    """Base class of every error lut_tvm reports to its users."""


@register_ffi_error
class PlanError(LutTvmError):
    """A LUT plan file is malformed, invalid, or does not fit the model."""


@register_ffi_error
class ModelLoadError(LutTvmError):
    """A model file could not be read or imported."""


@register_ffi_error
class TargetError(LutTvmError):
    """A target name or dict is not one lut_tvm can compile for."""


@register_ffi_error
class ArtifactError(LutTvmError):
    """A compiled artifact or its inputs are missing or do not match."""
