"""eLUT-NN training: hard LUT forward, straight-through backward through ``x.W``, per-layer reconstruction.

The recipe (after eLUT-NN / PIM-DL) for models whose every layer is a LUT, where LUT-NN's soft
assignment fails (transformers):

* forward: the hard LUT output the compiled kernels compute (argmin codes, INT8 tables
  ``P.W``, ``acc * scale``). With ``scales="layer"`` (one scale per layer) it is value-identical
  to ``LutLayer``'s hard mode and ``lut_tvm.reference.lut_matmul``; ``scales="column"`` uses one
  scale per output column (``max_ck |T[c, k, n]| / 127``, ``layers.quantize_tables``), as plans
  with ``table_quant="int8_per_column"`` and the kernels compute it.
* backward: the layer's input gets the gradient of the exact ``x.W`` (straight through the
  encoder); the centroids and weight get the gradient of the hard output through the tables
  (codes held fixed, the INT8 rounding straight through).
* ``train_layerwise``: progressive, one layer at a time in execution order: layer ``l`` sees the
  inputs of the model whose layers before ``l`` are already LUTs, and is fit (MSE) to the original
  model's output of that layer, first on its centroids only, then on centroids, weight and bias.
* ``train_end_to_end``: every LUT layer at once, distilling the original model's hidden states
  (outputs of named modules) and optionally a loss on the final outputs.

``use_elut(model, scales)`` switches a LUT model's layers to this forward (and back with ``None``);
both trainers do it themselves and leave it on, so evaluation sees what was trained.
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..errors import LutTvmError
from ..plan import TableQuant
from ..reference import TABLE_SCALE_GRANULARITIES
from ..ridge import ridge_weight
from .batches import iter_batches
from .layers import LutLayer, centroid_distances, hard_output, lut_layers
from .recipes import load_checkpoint, lut_parameters, save_checkpoint, CHECKPOINT_FORMAT, CHECKPOINT_VERSION

SCALES = TABLE_SCALE_GRANULARITIES  # per layer or per output column (reference.quantize_tables)


class _GradThroughDense(torch.autograd.Function):
    """Value of ``hard``; backward: ``hard``'s own graph gets the gradient, and ``rows`` gets ``grad @ W^T``."""

    @staticmethod
    def forward(ctx, hard, rows, weight_dn):  # pylint: disable=arguments-differ
        ctx.save_for_backward(weight_dn)
        ctx.rows_dtype = rows.dtype
        return hard.clone()

    @staticmethod
    def backward(ctx, grad):  # pylint: disable=arguments-differ
        (weight_dn,) = ctx.saved_tensors
        grad_rows = (grad @ weight_dn.t()).to(ctx.rows_dtype) if ctx.needs_input_grad[1] else None
        return grad, grad_rows, None


def elut_matmul(rows: torch.Tensor, centroids: torch.Tensor, weight_dn: torch.Tensor, scales: str = "layer",
                tables: torch.Tensor | None = None) -> torch.Tensor:
    """A LUT layer's ``[M, N]`` output (no bias) for ``rows [M, D]``: hard value, eLUT-NN gradients
    (module doc). ``tables [C, K, N]``, if given, replace ``P.W``."""
    if scales not in SCALES:
        raise LutTvmError(f"table scales {scales!r} are not one of {SCALES}")
    num_codebooks, _, sub_len = centroids.shape
    with torch.no_grad():
        dist = centroid_distances(rows.detach().reshape(len(rows), num_codebooks, sub_len), centroids.detach())
        codes = dist.argmin(-1)  # read by embedding_bag: at V = 2 a one-hot matmul costs 8 dense layers
    hard = hard_output(codes, centroids, weight_dn, tables, scales, rows.dtype)
    if not (torch.is_grad_enabled() and rows.requires_grad):
        return hard
    if tables is not None:
        raise LutTvmError("the eLUT-NN backward needs P.W tables (a layer with free tables has no x.W)")
    return _GradThroughDense.apply(hard, rows, weight_dn.detach())


def _elut_rows(self: LutLayer, rows: torch.Tensor) -> torch.Tensor:
    out = elut_matmul(rows, self.centroids, self.weight_dn(), self.elut_scales, self.tables)
    return out if self.bias is None else out + self.bias


def use_elut(model: nn.Module, scales: str | None = "layer") -> nn.Module:
    """Switch every LUT layer of ``model`` to the eLUT-NN forward with ``scales`` (``None``: back to
    the layers' own modes), and set each layer's ``table_quant`` to ``scales``. Returns ``model``."""
    if scales is not None and scales not in SCALES:
        raise LutTvmError(f"table scales {scales!r} are not one of {SCALES}")
    for _, layer in lut_layers(model):
        if scales is None:
            layer.__dict__.pop("lut_rows", None)
            layer.__dict__.pop("elut_scales", None)
        else:
            layer.elut_scales = scales
            # the layer's own table scales follow, so its hard mode and export_plan's plan agree
            layer.table_quant = TableQuant.INT8_PER_COLUMN if scales == "column" else TableQuant.INT8_PER_LAYER
            layer.lut_rows = types.MethodType(_elut_rows, layer)
    return model


class _Stop(Exception):
    """Raised by a capture hook to end a forward pass early."""


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def execution_order(model: nn.Module, sample: torch.Tensor) -> list[str]:
    """The LUT layers' module paths in the order one forward pass of ``sample`` calls them."""
    names = {id(layer): name for name, layer in lut_layers(model)}
    order: list[str] = []
    handles = [layer.register_forward_pre_hook(lambda m, _a: order.append(names[id(m)]) if names[id(m)] not in order
                                               else None) for _, layer in lut_layers(model)]
    try:
        with torch.no_grad():
            model.eval()(sample)
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name, _ in lut_layers(model) if name not in order]
    return order + missing


def capture(model: nn.Module, module_name: str, batches, what: str, row_mask=None) -> torch.Tensor:
    """Rows ``[M, F]`` of module ``module_name``'s input (``what="input"``) or output over ``batches``
    (each forward stops right after it), keeping the rows ``row_mask(batch)`` marks (if given)."""
    module = model.get_submodule(module_name)
    got: list[torch.Tensor] = []

    def hook(_module, args, output=None):
        value = args[0] if what == "input" else _first(output)
        got.append(value.detach().reshape(-1, value.shape[-1]) if not isinstance(module, nn.Conv2d)
                   else value.detach())
        raise _Stop

    handle = (module.register_forward_pre_hook(hook) if what == "input" else module.register_forward_hook(hook))
    parts = []
    model.eval()
    try:
        with torch.no_grad():
            for x in batches:
                got.clear()
                try:
                    model(x)
                except _Stop:
                    pass
                if not got:
                    raise LutTvmError(f"a forward pass never reached module {module_name!r}")
                rows = got[0]
                if row_mask is not None:
                    rows = rows[row_mask(x).reshape(-1)]
                parts.append(rows)
    finally:
        handle.remove()
    return torch.cat(parts)


def _relative_error(layer: LutLayer, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096) -> float:
    with torch.no_grad():
        err = sum(float(((layer(xb) - yb) ** 2).sum()) for xb, yb in zip(x.split(chunk), y.split(chunk)))
    return err / max(float((y**2).sum()), 1e-30)


def solve_weight(layer: LutLayer, x: torch.Tensor, y: torch.Tensor, ridge_lambda: float) -> None:
    """Set a Linear LUT layer's weight to the ridge fit of ``y - bias`` on the decoded ``x`` (each
    sub-vector replaced by its centroid: ``lut_tvm.ridge.ridge_weight``), the best ``W`` for these codes."""
    target = y if layer.bias is None else y - layer.bias.detach()
    weight = ridge_weight(x.double().numpy(), layer.centroids.detach().double().numpy(), target.double().numpy(),
                          ridge_lambda, "eLUT-NN weight solve")
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight.T).reshape(layer.weight.shape))


def fit_layer(layer: LutLayer, x: torch.Tensor, y: torch.Tensor, *, stages, lr: float, batch_rows: int,
              seed: int, weight_lr_ratio: float = 0.1, ridge_lambda: float | None = 1.0) -> list[float]:
    """Adam on ``MSE(layer(x), y)`` for each ``(train_weights, epochs)`` of ``stages`` (minibatches of
    ``batch_rows`` rows, seeded order; the weight and bias at ``lr * weight_lr_ratio``); a weight
    stage starts from the ridge solve of the weight (``solve_weight``) unless ``ridge_lambda`` is
    None. A stage that ends with a larger error than it started with is undone. Returns the relative
    error after each stage."""
    errors = []
    best = _relative_error(layer, x, y)
    for stage, (train_weights, epochs) in enumerate(stages):
        saved = {k: v.detach().clone() for k, v in layer.state_dict().items()}
        if train_weights and ridge_lambda is not None:
            solve_weight(layer, x, y, ridge_lambda)
        groups = [{"params": [layer.centroids], "lr": lr}]
        if train_weights:
            groups.append({"params": [p for n, p in layer.named_parameters() if n in ("weight", "bias")],
                           "lr": lr * weight_lr_ratio})
        optimizer = torch.optim.Adam(groups)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + stage)
        layer.train()
        for _ in range(epochs):
            for index in torch.randperm(len(x), generator=generator).split(batch_rows):
                loss = F.mse_loss(layer(x[index]), y[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        layer.eval()
        error = _relative_error(layer, x, y)
        if error > best:
            layer.load_state_dict(saved)
            error = best
        best = error
        errors.append(error)
    return errors


def _sample_rows(x: torch.Tensor, y: torch.Tensor, max_rows: int | None, seed: int):
    if max_rows is None or len(x) <= max_rows:
        return x, y
    keep = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(x), max_rows, replace=False)))
    return x[keep], y[keep]


def _checkpointed(checkpoint, recipe: str, settings: dict) -> dict | None:
    if checkpoint is not None and Path(checkpoint).is_file():
        return load_checkpoint(checkpoint, recipe, settings)
    return None


def _save(checkpoint, recipe: str, settings: dict, **state) -> None:
    if checkpoint is not None:
        save_checkpoint(checkpoint, {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "recipe": recipe,
                                     "settings": settings, **state})


def train_layerwise(lut_model: nn.Module, teacher: nn.Module, data, *, centroid_epochs: int = 4,
                    weight_epochs: int = 4, lr: float = 1e-3, batch_rows: int = 256, max_rows: int | None = 16384,
                    batch_size: int = 32, scales: str = "layer", row_mask=None, seed: int = 0,
                    checkpoint=None, max_layers: int | None = None) -> list[dict]:
    """Progressive layer-wise eLUT-NN (module doc) over ``data`` (an array / tensor of inputs or an
    iterable of batches); returns per layer ``{"layer", "error_init", "error_centroids", "error_weights"}``
    (relative squared errors against the original layer's output on the fitting rows).

    ``row_mask(batch) -> bool tensor`` keeps some rows of a Linear's flattened input (e.g. real
    tokens, not padding); at most ``max_rows`` rows per layer are kept (seeded). A checkpoint is
    written after each layer; a run resumed from it skips the layers done and ends the same.
    ``max_layers`` stops after fitting that many more layers (split a long run; resume later).
    """
    use_elut(lut_model, scales)
    teacher.eval()
    batches = list(iter_batches(data, batch_size))
    order = execution_order(lut_model, batches[0])
    settings = {"centroid_epochs": centroid_epochs, "weight_epochs": weight_epochs, "lr": lr,
                "batch_rows": batch_rows, "max_rows": max_rows, "batch_size": batch_size, "scales": scales,
                "seed": seed, "samples": sum(len(b) for b in batches), "layers": order}
    state = _checkpointed(checkpoint, "elut_layerwise", settings)
    history: list[dict] = []
    if state is not None:
        lut_model.load_state_dict(state["model"])
        history = list(state["history"])
    bar = tqdm(total=len(order), desc="eLUT layer-wise", unit="layer", initial=len(history))
    stop = len(order) if max_layers is None else min(len(order), len(history) + max_layers)
    for index, name in enumerate(order[:stop]):
        if index < len(history):
            continue
        layer = lut_model.get_submodule(name)
        x = capture(lut_model, name, batches, "input", row_mask)
        y = capture(teacher, name, batches, "output", row_mask)
        if isinstance(layer, nn.Conv2d) or x.ndim != 2:
            raise LutTvmError(f"layer {name!r}: train_layerwise handles Linear LUT layers only")
        x, y = _sample_rows(x, y, max_rows, seed + index)
        torch.manual_seed(seed * 100_003 + index)
        start = _relative_error(layer, x, y)
        errors = fit_layer(layer, x, y, stages=[(False, centroid_epochs), (True, weight_epochs)], lr=lr,
                           batch_rows=batch_rows, seed=seed + index)
        history.append({"layer": name, "rows": len(x), "error_init": start, "error_centroids": errors[0],
                        "error_weights": errors[1]})
        bar.update(1)
        bar.set_postfix(layer=name[-24:], err=f"{start:.3f}->{errors[1]:.3f}")
        _save(checkpoint, "elut_layerwise", settings, epoch=index + 1, history=history,
              model=lut_model.state_dict())
    bar.close()
    lut_model.eval()
    return history


def train_end_to_end(lut_model: nn.Module, teacher: nn.Module, data, *, hidden_modules: list[str],
                     output_loss=None, epochs: int = 1, lr: float = 1e-4, batch_size: int = 16,
                     scales: str = "layer", train_weights: bool = True, seed: int = 0,
                     checkpoint=None) -> list[dict]:
    """Every LUT layer at once (eLUT-NN forward): Adam on the sum over ``hidden_modules`` of
    ``MSE(student, teacher) / mean(teacher^2)`` (their outputs), plus ``output_loss(student_out,
    teacher_out)`` if given, over the LUT layers' centroids (and weights, biases). The other modules
    run in eval mode (no dropout, as the teacher). Seeded order per epoch; checkpoint after each
    epoch (resume ends the same). Returns one record per epoch."""
    use_elut(lut_model, scales)
    teacher.eval()
    x_all = torch.as_tensor(np.asarray(data) if not isinstance(data, torch.Tensor) else data)
    settings = {"hidden_modules": list(hidden_modules), "lr": lr, "batch_size": batch_size, "scales": scales,
                "train_weights": train_weights, "seed": seed, "samples": len(x_all),
                "output_loss": getattr(output_loss, "__name__", None)}
    params = lut_parameters(lut_model, train_weights)
    optimizer = torch.optim.Adam(params, lr=lr)
    state = _checkpointed(checkpoint, "elut_end_to_end", settings)
    start, history = 0, []
    if state is not None:
        lut_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = int(state["epoch"]), list(state["history"])

    def recorder(store):
        return lambda _m, _a, output: store.append(_first(output))

    student_hidden: list[torch.Tensor] = []
    teacher_hidden: list[torch.Tensor] = []
    handles = [lut_model.get_submodule(n).register_forward_hook(recorder(student_hidden)) for n in hidden_modules]
    handles += [teacher.get_submodule(n).register_forward_hook(recorder(teacher_hidden)) for n in hidden_modules]
    steps = -(-len(x_all) // batch_size)
    bar = tqdm(total=max(epochs - start, 0) * steps, desc="eLUT end-to-end", unit="step")
    try:
        for epoch in range(start, epochs):
            torch.manual_seed(seed * 100_003 + epoch)
            order = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
            lut_model.eval()  # no dropout / batch-norm updates: the teacher's hidden states are eval-mode ones
            for _, layer in lut_layers(lut_model):
                layer.train()
            total = seen = 0.0
            for index in order.split(batch_size):
                xb = x_all[index]
                student_hidden.clear()
                teacher_hidden.clear()
                with torch.no_grad():
                    target = teacher(xb)
                out = lut_model(xb)
                loss = sum(F.mse_loss(s, t) / t.pow(2).mean().clamp(min=1e-12)
                           for s, t in zip(student_hidden, teacher_hidden))
                if output_loss is not None:
                    loss = loss + output_loss(out, target)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(index)
                seen += len(index)
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{total / seen:.4f}")
            history.append({"epoch": epoch + 1, "loss": total / seen})
            _save(checkpoint, "elut_end_to_end", settings, epoch=epoch + 1, history=history,
                  model=lut_model.state_dict(), optimizer=optimizer.state_dict())
    finally:
        for handle in handles:
            handle.remove()
        bar.close()
    lut_model.eval()
    return history
