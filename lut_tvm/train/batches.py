"""Input batches from an array, a tensor or an iterable of batches, for calibration and training."""

from __future__ import annotations

import numpy as np
import torch


def iter_batches(data, batch_size: int, limit: int | None = None):
    """Input batches (tensors) from an array / tensor of samples or an iterable of batches
    (``x`` or ``(x, y, ...)``), up to ``limit`` samples."""
    if isinstance(data, (np.ndarray, torch.Tensor)):
        data = torch.as_tensor(data)
        data = data if limit is None else data[:limit]
        yield from torch.split(data, batch_size)
        return
    seen = 0
    for batch in data:
        x = torch.as_tensor(batch[0] if isinstance(batch, (tuple, list)) else batch)
        if limit is not None:
            x = x[: limit - seen]
        if not len(x):
            return
        seen += len(x)
        yield x
