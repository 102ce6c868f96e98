"""The torch modules a plan can cover: ``weights.not_lut_reason`` applied to ``nn.Linear`` / ``nn.Conv2d``.

Training walks the modules to replace them (``lut_tvm.train.convert``) and the exact fake-quant
model does too (``lut_tvm.exact.quantize``); both ask this module which ones are eligible and
what their canonical weight (``weights.canonical_weight``) and fingerprint are, so a module is
found by the same rule and the same key as the graph's layer discovery
(``relay_passes.layer_sites``) finds its layer.
"""

from __future__ import annotations

import logging

import numpy as np
from torch import nn

from .weights import LayerKind, canonical_weight, fingerprint, not_lut_reason

LOG = logging.getLogger("lut_tvm")


def module_kind(module: nn.Module) -> LayerKind | None:
    """DENSE for an ``nn.Linear``, CONV2D for an ``nn.Conv2d``, else None (eligible or not)."""
    if isinstance(module, nn.Linear):
        return LayerKind.DENSE
    if isinstance(module, nn.Conv2d):
        return LayerKind.CONV2D
    return None


def module_reason(module: nn.Module, grouped: bool = False) -> str | None:
    """Why a Linear / Conv2d cannot become a LUT (``weights.not_lut_reason``; grouped convs allowed
    with ``grouped``, as LUT-NN allows them), or None."""
    kind = module_kind(module)
    if kind is LayerKind.CONV2D:
        return not_lut_reason(kind, groups=module.groups, padding_mode=module.padding_mode,
                              dtype=module.weight.dtype, grouped=grouped)
    return not_lut_reason(kind, dtype=module.weight.dtype)


def lut_modules(model: nn.Module, grouped: bool = False) -> list[tuple[str, nn.Module, LayerKind]]:
    """``[(module path, module, kind)]`` of the eligible Linear / Conv2d modules, in registration
    order (the others logged with their reason); grouped and depthwise convs only with ``grouped``
    (LUT-NN training covers them, the exact mode does not)."""
    found = []
    for name, module in model.named_modules():
        kind = module_kind(module)
        if kind is None:
            continue
        reason = module_reason(module, grouped)
        if reason:
            LOG.info("%s %s stays dense: %s", type(module).__name__, name or "(the model)", reason)
            continue
        found.append((name, module, kind))
    return found


def module_weight(module: nn.Module) -> np.ndarray:
    """A Linear / Conv2d weight in the canonical layout plans fingerprint."""
    return canonical_weight(module_kind(module), module.weight.detach().cpu().numpy())


def modules_by_fingerprint(model: nn.Module) -> dict[str, tuple[str, nn.Module]]:
    """``{weight fingerprint: (module path, module)}`` of the eligible modules (a shared weight: the first)."""
    found: dict[str, tuple[str, nn.Module]] = {}
    for name, module, _ in lut_modules(model):
        found.setdefault(fingerprint(module_weight(module)), (name, module))
    return found
