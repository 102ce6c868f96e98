"""Task 4: keyword spotting on SYNTHETIC speech (espeak-ng, voices held out) with a 1-D CNN over time.

Data: ``benchmarks.accuracy.speech`` (10 keywords + _unknown_ + _silence_; train and test voices
disjoint in both accent and variant), 40 log-mel channels x 48 frames of 20 ms, standardised per
mel channel with the training set's statistics. CNN (trained here, seeded, weights cached):
conv1d 40->64 (k3), 64->64 (k3, stride 2), 64->64 (k3), 64->64 (k3, stride 2), 64->64 (k3),
fc 768->64, fc 64->12, ReLUs. LUT layers (``LutConv1d`` from ``lut_tvm.train.conv1d``,
``LutLinear``): every conv but the first (V = kernel length 3: C = 64) and fc 768->64 (V = 16),
K = 16; the first conv and the classifier stay dense. Rows: k-means only, its ridge refits
(``common.ridge_baselines``), then LUT-NN's recipe (9 epochs: the 15-minute budget on a busy
2-core machine) and the reconstruction recipe on 5% of the training clips, both started from the
ridge-refit weights as in the MNIST-1D task. As there, every row's accuracy is the compiled model's
(the conv1d layers as LUT kernels), with its whole-model latency (``benchmarks.accuracy.compiled``).
The "optimize" row: ``lut_tvm.optimize`` over every layer (``optimize_method``), compiled.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from ..common import cached_training, layer_summary
from ..speech import KwsSettings, load_kws
from ._shared import METHOD_GROUPS, factory_meta
from .mnist1d import conv1d_methods, train_cnn

NAME = "kws"


def kws_cnn(n_mels: int = 40, frames: int = 48, classes: int = 12, width: int = 64) -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(n_mels, width, 3, padding=1), nn.ReLU(),
        nn.Conv1d(width, width, 3, stride=2, padding=1), nn.ReLU(),   # frames / 2
        nn.Conv1d(width, width, 3, padding=1), nn.ReLU(),
        nn.Conv1d(width, width, 3, stride=2, padding=1), nn.ReLU(),   # frames / 4
        nn.Conv1d(width, width, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(width * (frames // 4), 64), nn.ReLU(), nn.Linear(64, classes),
    )


def standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets standardised per mel channel with the training set's mean and standard deviation."""
    mean = x_train.mean((0, 2), keepdims=True)
    std = x_train.std((0, 2), keepdims=True) + 1e-6
    return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)


def run(seed: int = 0, cnn_epochs: int = 40, lutnn_epochs: int = 9, recon_epochs: int = 40,
        fraction: float = 0.05, log=print, quick: bool = False, groups=METHOD_GROUPS, optimize: dict | None = None) -> dict:
    data_settings = KwsSettings(seed=seed)
    if quick:
        cnn_epochs, lutnn_epochs, recon_epochs = 3, 1, 5
        data_settings = KwsSettings(seed=seed, train_variants=data_settings.train_variants[:4],
                                    test_variants=data_settings.test_variants[:2], test_takes=3)
    data = load_kws(data_settings, log)
    x_train, x_test = standardise(data.x_train, data.x_test)
    y_train, y_test = data.y_train, data.y_test
    test = (x_test, y_test)
    log(f"[{NAME}] {len(x_train)} train / {len(x_test)} test synthetic clips, {len(data.labels)} classes; "
        f"{len(data.train_voices)} train / {len(data.test_voices)} held-out espeak-ng voices")
    settings = {"arch": "kws-cnn1d-64", "epochs": cnn_epochs, "seed": seed, "data": data.path.name}
    n_mels, frames = x_train.shape[1:]
    build = lambda: kws_cnn(n_mels, frames, len(data.labels))  # noqa: E731
    original, cnn_info = cached_training(
        NAME, settings, build, lambda m: train_cnn(m, x_train, y_train, cnn_epochs, seed, log), log)
    methods, kmeans = conv1d_methods(original, (x_train, y_train), test, seed=seed, log=log, quick=quick,
                                     lutnn_epochs=lutnn_epochs, recon_epochs=recon_epochs, fraction=fraction,
                                     groups=groups, optimize={"task": NAME, **(optimize or {}), "torch_meta": factory_meta(
                                         f"{__name__}:kws_cnn", n_mels=int(n_mels), frames=int(frames), classes=len(data.labels))})
    splits = (("train", data_settings.train_accents, data_settings.train_variants),
              ("held-out test", data_settings.test_accents, data_settings.test_variants))
    voices = "; ".join(f"{split} voices: accents {', '.join(accents)} x variants +{', +'.join(variants)}"
                       for split, accents, variants in splits)
    return {
        "task": NAME, "title": "Keyword spotting on SYNTHETIC speech (espeak-ng), 1-D CNN (LutConv1d)",
        "metric": "acc", "unit": "sample",
        "data": (f"synthetic: espeak-ng ({data.path.name}), classes {', '.join(data.labels)}; {len(x_train)} train / "
                 f"{len(x_test)} test 1-s clips, speed {data_settings.speeds}, pitch {data_settings.pitches}, "
                 f"time shift + coloured noise at SNR {data_settings.snr_db} dB; {voices}; "
                 f"log-mel {n_mels} x {frames} (librosa, 20 ms hop)"),
        "model": (f"1-D CNN over time: conv1d {n_mels}->64 (k3), 4x conv1d 64 (k3; strides 2, 1, 2, 1), "
                  f"fc {64 * (frames // 4)}->64, fc 64->{len(data.labels)}"),
        "original_training": {**settings, **cnn_info, "data_generation_seconds": data.generation_seconds},
        "lut_layers": layer_summary(kmeans) if kmeans is not None else None, "methods": methods,
    }
