"""Model size and arithmetic of an original model and its LUT version.

Bytes
  original: every parameter in fp32 (4 bytes each).
  LUT model: per LUT layer the INT8 tables ``C*K*N`` bytes + fp32 centroids ``C*K*V*4`` + fp32 bias
  ``N*4`` + one fp32 scale; the layer's weight is not kept (the tables replace it). Every other
  parameter (first conv, classifier, norms, embeddings, ...) stays fp32.

Arithmetic, per sample (or per token, for a transformer: see ``unit``), counted with forward
hooks on one real input
  original: multiply-accumulates (MACs) of every Linear / Conv1d / Conv2d; FLOPs = 2 * MACs.
  LUT model: the remaining dense layers' FLOPs, plus per LUT layer and row the encode distance
  GEMM ``C*K*V`` MACs (2 FLOPs each; ``||P||^2`` is precomputed), ``C*(K-1)`` argmin compares, and
  ``C*N`` table lookups each followed by an int16/int32 add.
  Other work the two models share (attention score / context matmuls, norms, activations,
  pooling) is not counted in either column.
"""

from __future__ import annotations

import torch
from torch import nn

from lut_tvm.train import lut_layers
from lut_tvm.train.layers import LutLayer

FP32 = 4


def _is_lut(module) -> bool:
    return isinstance(module, LutLayer)


def model_bytes(model: nn.Module) -> dict:
    """``{"total", "lut_layers", "dense_rest", "tables", "centroids"}`` in bytes (see module doc)."""
    luts = lut_layers(model)
    lut_params = {id(p) for _, layer in luts for p in layer.parameters()}
    rest = sum(p.numel() * FP32 for p in model.parameters() if id(p) not in lut_params)
    tables = centroids = other = 0
    for _, layer in luts:
        num_codebooks, num_centroids, _ = layer.centroids.shape
        out = layer.weight_dn().shape[1]
        tables += num_codebooks * num_centroids * out  # int8
        centroids += layer.centroids.numel() * FP32
        other += (0 if layer.bias is None else layer.bias.numel() * FP32) + FP32  # bias + scale
    lut_total = tables + centroids + other
    return {"total": rest + lut_total, "lut_layers": lut_total, "dense_rest": rest,
            "tables": tables, "centroids": centroids}


def replaced_weight_bytes(original: nn.Module, lut_model: nn.Module) -> int:
    """fp32 bytes of the original weights + biases of the layers that ``lut_model`` made LUTs."""
    total = 0
    for name, _ in lut_layers(lut_model):
        module = original.get_submodule(name)
        total += sum(p.numel() for p in module.parameters()) * FP32
    return total


def _rows_and_depth(module, args, output) -> tuple[int, int, int]:
    """``(rows M, reduction D, outputs N)`` of a Linear / Conv1d / Conv2d / LUT layer call."""
    if isinstance(module, nn.Linear) or (_is_lut(module) and not hasattr(module, "rows")):
        depth = module.weight.shape[1]
        out = module.weight.shape[0]
        return args[0].numel() // depth, depth, out
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) or _is_lut(module):
        out = output.shape[1]
        positions = output.numel() // out  # N * OL or N * OH * OW
        depth = module.weight[0].numel()
        return positions, depth, out
    raise TypeError(type(module))


def count_ops(model: nn.Module, sample, per: int = 1, call=None) -> dict:
    """Arithmetic of one forward of ``model`` on ``sample`` divided by ``per`` (samples or tokens).

    Returns ``{"dense_macs", "encode_macs", "argmin_compares", "lookups", "flops"}`` where
    ``flops = 2*dense_macs + 2*encode_macs`` (lookups and their adds are listed, not folded in).
    """
    totals = {"dense_macs": 0, "encode_macs": 0, "argmin_compares": 0, "lookups": 0}

    def hook(module, args, output):
        rows, depth, out = _rows_and_depth(module, args, output)
        if _is_lut(module):
            num_codebooks, num_centroids, sub_len = module.centroids.shape
            totals["encode_macs"] += rows * num_codebooks * num_centroids * sub_len
            totals["argmin_compares"] += rows * num_codebooks * (num_centroids - 1)
            totals["lookups"] += rows * num_codebooks * out
        else:
            totals["dense_macs"] += rows * depth * out

    handles = []
    for module in model.modules():
        if _is_lut(module) or isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            handles.append(module.register_forward_hook(hook))
    try:
        model.eval()
        with torch.no_grad():
            (call or model)(sample)
    finally:
        for handle in handles:
            handle.remove()
    result = {k: v / per for k, v in totals.items()}
    result["flops"] = 2 * result["dense_macs"] + 2 * result["encode_macs"]
    return result
