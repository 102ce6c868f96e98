"""lut_tvm.train: convert a torch model to LUT layers, learn the centroids, export plan + dense model."""

from .conv1d import LutConv1d, convert_conv1d, convert_with_conv1d
from .convert import LutConfig, convert, select_modules
from .elut import elut_matmul, train_end_to_end, train_layerwise, use_elut
from .export import export_plan, to_dense_model
from .layers import (MODES, LutConv2d, LutLayer, LutLinear, build_tables, centroid_distances,
                     lut_layers, lut_matmul, quantize_tables, round_ste, set_mode)
from .refit import ridge_refit
from .recipes import (accuracy, distillation_loss, kmeans_baseline, low_data_subset, save_checkpoint,
                      train_lutnn, train_reconstruction)

__all__ = [
    "MODES", "LutConfig", "LutConv1d", "LutConv2d", "LutLayer", "LutLinear", "accuracy", "build_tables",
    "centroid_distances", "convert", "elut_matmul", "convert_conv1d", "convert_with_conv1d", "distillation_loss", "export_plan", "kmeans_baseline",
    "low_data_subset", "ridge_refit", "lut_layers", "lut_matmul", "quantize_tables", "round_ste",
    "save_checkpoint", "select_modules", "set_mode", "to_dense_model", "train_end_to_end", "train_layerwise",
    "train_lutnn", "train_reconstruction", "use_elut",
]
