"""Five small architectures of kinds the project's own models do not have (LayerNorm/GELU MLP, a transformer
with nn.MultiheadAttention, Conv1d, depthwise-separable stride-2 CNN with BatchNorm, bias-less MLP), trained
for a fixed number of epochs on OpenCV's digits, and the split of those digits into train / eval / test."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

BATCH = 50  # the batch the models are exported at


class WideMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.ln1 = nn.Linear(400, 512), nn.LayerNorm(512)
        self.fc2, self.ln2 = nn.Linear(512, 512), nn.LayerNorm(512)
        self.fc3, self.head, self.act = nn.Linear(512, 256), nn.Linear(256, 10), nn.GELU()

    def forward(self, x):
        x = self.act(self.ln1(self.fc1(x)))
        x = self.act(self.ln2(self.fc2(x)))
        return self.head(self.act(self.fc3(x)))


class Transformer(nn.Module):
    """Input ``[B, 25, 16]``: the 4 x 4 patches of a digit."""

    def __init__(self):
        super().__init__()
        self.embed, self.pos = nn.Linear(16, 64), nn.Parameter(torch.randn(1, 25, 64) * 0.02)
        layer = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.enc(self.embed(x) + self.pos).mean(1))


class Conv1dNet(nn.Module):
    """Input ``[B, 20, 20]``: a digit's rows as a sequence of 20 channels."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(20, 64, 3, padding=1)
        self.c2 = nn.Conv1d(64, 64, 3, stride=2, padding=1)
        self.c3 = nn.Conv1d(64, 128, 3, padding=1)
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        x = torch.relu(self.c3(torch.relu(self.c2(torch.relu(self.c1(x))))))
        return self.fc(x.mean(-1))


def _separable(channels_in, channels_out, stride):
    return [nn.Conv2d(channels_in, channels_in, 3, stride, 1, groups=channels_in, bias=False),
            nn.BatchNorm2d(channels_in), nn.ReLU(),
            nn.Conv2d(channels_in, channels_out, 1, bias=False), nn.BatchNorm2d(channels_out), nn.ReLU()]


class SepCNN(nn.Module):
    """Input ``[B, 1, 20, 20]``."""

    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(1, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                               *_separable(32, 64, 2), *_separable(64, 128, 2), *_separable(128, 128, 1))
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc(self.f(x).mean((2, 3)))


class NoBiasMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(400, 384, bias=False)
        self.fc2 = nn.Linear(384, 384, bias=False)
        self.fc3 = nn.Linear(384, 10, bias=False)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


# name -> (class, training epochs, input layout)
MODELS = {"widemlp": (WideMLP, 30, "flat"), "transformer": (Transformer, 30, "patches"),
          "conv1d": (Conv1dNet, 30, "rows"), "sepcnn": (SepCNN, 15, "image"), "nobias": (NoBiasMLP, 30, "flat")}


def shaped(name: str, x: np.ndarray) -> np.ndarray:
    """Digits ``[N, 1, 20, 20]`` in the layout the model ``name`` takes."""
    n, layout = len(x), MODELS[name][2]
    if layout == "flat":
        x = x.reshape(n, 400)
    elif layout == "patches":
        x = x.reshape(n, 5, 4, 5, 4).transpose(0, 1, 3, 2, 4).reshape(n, 25, 16)
    elif layout == "rows":
        x = x.reshape(n, 20, 20)
    return np.ascontiguousarray(x, dtype=np.float32)


def split_digits(x: np.ndarray, y: np.ndarray, seed: int = 0):
    """``{train, eval, test: (x, y)}``: 2,500 / 1,000 / 1,500 of the 5,000 digits by a seeded permutation."""
    order = np.random.default_rng(seed).permutation(len(x))
    parts = {"train": order[:2500], "eval": order[2500:3500], "test": order[3500:]}
    return {part: (x[idx], y[idx]) for part, idx in parts.items()}


def train(name: str, x: np.ndarray, y: np.ndarray, seed: int = 0) -> nn.Module:
    """The model ``name`` trained with AdamW for its fixed epochs (seeded, one torch thread), in eval mode."""
    torch.manual_seed(seed)
    model = MODELS[name][0]()
    epochs = MODELS[name][1]
    optimizer = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=1e-4)
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y).long()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), 64):
            idx = order[start : start + 64]
            loss = nn.functional.cross_entropy(model(inputs[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()
