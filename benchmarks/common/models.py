"""BatchNorm folding for the benchmarks' CNNs (each model lists its conv/BatchNorm pairs)."""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval copy with each BatchNorm folded into its conv (torch's ``fuse_conv_bn_eval``; convs
    gain a bias) for the pairs ``model.conv_bn_pairs()`` names.

    Pruned weights stay zero (folding scales each output channel), so sparsity is kept.
    """
    folded = copy.deepcopy(model).eval()
    for conv_name, bn_name in model.conv_bn_pairs():
        _set(folded, conv_name, fuse_conv_bn_eval(folded.get_submodule(conv_name),
                                                  folded.get_submodule(bn_name)))
        _set(folded, bn_name, nn.Identity())
    return folded
