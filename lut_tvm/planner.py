"""Build a LUT plan by k-means on each layer's real inputs: the MADDNESS-style baseline.

The calibration inputs run through the model itself (compiled dense, with ``TapLayerInputs``),
so the layers and their order are exactly those the compile passes see, for torch and ONNX
models alike. Each layer's (im2col'd) input rows are split into codebooks and clustered with
scikit-learn's KMeans; a grouped conv's full rows are group-major, so its codebooks are each
group's own (V divides the per-group length ``I/G * kh * kw``). With ``PlanPolicy.refit_tables`` the tables are then refit on the same rows
(MADDNESS, ``lut_tvm.ridge``) and stored in the plan as free tables (``LayerPlan.tables``, plan
format version 2); ``ridge_refit_tables`` refits the tables of an existing plan.
"""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np
from tqdm.auto import tqdm

from relay_passes import TapLayerInputs
from relay_passes.layer_sites import unique_layer_sites

from . import _tvm_compat
from .compiler import build_relax, imported_name, layer_sites, rewrite_module
from .errors import PlanError
from .frontends import ImportedModel, import_model
from .int8_encode_reference import encode_int8
from .kmeans import kmeans_centroids
from .plan import EncodeMode, LayerPlan, Plan
from .policy import PlanPolicy, TableRefit
from .reference import build_tables, encode, im2col_nchw
from .ridge import check_ridge_lambda, ridge_tables, ridge_weight
from .targets import resolve_target
from .weights import LayerKind, as_dense_matrix, default_sub_len_fits

LOG = logging.getLogger("lut_tvm")


def layer_name(imported, site, index: int) -> str:
    """The model's own name of a layer's weight (``fc1`` for ``fc1.weight``), else kind+index."""
    name = imported.weight_names.get(site.fingerprint)
    if name is None:
        return f"{site.kind.value}{index}"
    return name[: -len(".weight")] if name.endswith(".weight") else name


def named_layers(imported, grouped: bool = False) -> list[tuple[str, object]]:
    """``[(name, site)]`` of every layer the compiler can replace (``compiler.layer_sites``: one per
    distinct weight, in graph order), named by ``layer_name``: the one layer discovery of the
    planner, the optimizer and ``lut_tvm.exact.quantize_model``. Grouped and depthwise convs
    (``site.groups > 1``) only with ``grouped`` (LUT-NN plans them; the exact mode does not);
    names and indices are the same either way."""
    named = [(layer_name(imported, site, i), site) for i, site in enumerate(layer_sites(imported))]
    return [(name, site) for name, site in named if grouped or site.groups == 1]


def select_layers(imported, policy: PlanPolicy):
    """``[(name, site)]`` the policy plans (``PlanPolicy.choose``), in graph order. A layer whose
    default V does not divide its reduction length (per group for a grouped conv) stays dense
    (``weights.default_sub_len_fits``, with a warning; ``sub_len_overrides`` plans it)."""
    named = named_layers(imported, grouped=True)
    chosen = set(policy.choose([(name, site.kind) for name, site in named]))
    return [(name, site) for name, site in named
            if name in chosen and default_sub_len_fits(policy, name, site.kind, site.weight.shape, site.groups)]



def _layer_rows(site, inputs: np.ndarray) -> np.ndarray:
    if site.kind is LayerKind.DENSE:
        return inputs.reshape(-1, inputs.shape[-1])
    geometry = site.geometry
    rows, _ = im2col_nchw(inputs, geometry.kernel, geometry.strides, geometry.padding, geometry.dilation)
    return rows


def tapped_batches(imported, calibration: np.ndarray, sites, *, keep_tail: bool = False, plan: Plan | None = None):
    """For each batch of the calibration samples (the model's batch size), ``[input of site]`` as
    NumPy arrays: the model itself runs (compiled dense with ``TapLayerInputs``). Without
    ``keep_tail`` the samples after the last full batch are left out; with it the last batch is
    padded with zeros and the padding trimmed from the inputs (batch on axis 0). ``plan``: the model
    runs with the plan's layers as LUTs (the inputs the LUT model feeds its layers); ``sites`` must
    then be layers the plan leaves dense."""
    check_calibration(imported, calibration)
    target = resolve_target("native")
    mod = imported.mod if plan is None or not plan.layers else rewrite_module(imported, plan, target)[0]
    order = [site.fingerprint for _, site in unique_layer_sites(mod["main"])]
    missing = [site.fingerprint for site in sites if site.fingerprint not in order]
    if missing:
        raise PlanError(f"cannot tap the input of {len(missing)} layer(s) that the plan makes LUTs")
    tapped = TapLayerInputs()(mod)
    vm = _tvm_compat.virtual_machine(build_relax(tapped, target))
    wanted = [order.index(site.fingerprint) for site in sites]
    batch = imported.input_shapes[0][0]
    stop = len(calibration) if keep_tail else len(calibration) - batch + 1
    starts = range(0, max(stop, 0), batch)
    if not starts:
        raise PlanError(f"need at least {batch} calibration samples (the model's batch), "
                        f"got {len(calibration)}")
    for start in tqdm(starts, desc="calibration", unit="batch", leave=False, disable=None):
        chunk = calibration[start : start + batch].astype(np.float32)
        valid = len(chunk)
        if valid < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - valid, *chunk.shape[1:]), np.float32)])
        outputs = vm["main"](_tvm_compat.to_device(chunk))
        yield [_without_padding(outputs[index].numpy(), valid, batch) for index in wanted]


def _without_padding(layer_input: np.ndarray, valid: int, batch: int) -> np.ndarray:
    """A layer's tapped input for the first ``valid`` of ``batch`` samples. Its axis 0 is the batch, or the
    batch flattened with other axes before it (``[B * S, D]``: torch.export's view of a Linear on a 3-D
    input), so each sample owns ``len / batch`` consecutive rows; a full batch is kept whole."""
    if valid == batch:
        return layer_input
    return layer_input[: valid * (len(layer_input) // batch)]


def collect_layer_rows(imported, calibration: np.ndarray, sites, max_rows: int, rng,
                       plan: Plan | None = None) -> list[np.ndarray]:
    """Input rows of each site for the calibration samples, at most ``max_rows`` each (``rng`` picks
    them; ``rng=None``: every row). ``plan``: the inputs of the model with the plan's layers as LUTs
    (``tapped_batches``)."""
    rows: list[list[np.ndarray]] = [[] for _ in sites]
    for inputs in tapped_batches(imported, calibration, sites, plan=plan):
        for slot, layer_inputs in enumerate(inputs):
            rows[slot].append(_layer_rows(sites[slot], layer_inputs))
    sampled = []
    for parts in rows:
        stacked = np.concatenate(parts)
        if rng is not None and len(stacked) > max_rows:
            stacked = stacked[rng.choice(len(stacked), max_rows, replace=False)]
        sampled.append(stacked)
    return sampled


def check_calibration(imported, calibration: np.ndarray) -> None:
    """PlanError unless ``calibration`` is finite samples of the model's first input, stacked on
    axis 0 (``[S, *input_shape[1:]]``)."""
    sample = list(imported.input_shapes[0][1:])
    if calibration.ndim != len(sample) + 1 or list(calibration.shape[1:]) != sample:
        raise PlanError(f"calibration data has shape {list(calibration.shape)}, but "
                        f"{imported.source}'s input {imported.input_names[0]!r} is "
                        f"{list(imported.input_shapes[0])}: give samples stacked on axis 0, "
                        f"[S, {', '.join(map(str, sample))}]")
    if not np.isfinite(calibration).all():
        raise PlanError("calibration data holds NaN or infinite values")


def reconstruction_error(site, centroids: np.ndarray, rows: np.ndarray, tables=None,
                         encode_mode: EncodeMode = EncodeMode.FLOAT) -> float:
    """The layer's relative output error on its calibration ``rows [M, D]``: ||X.W - LUT(X)|| /
    ||X.W|| (Frobenius, no bias), with real-valued tables (``P.W``, or the plan's free tables) and
    the codes of the layer's ``encode_mode``: how much of the layer's output the codebooks (and
    an int8 encode) lose, before the int8 rounding of the tables."""
    weight = as_dense_matrix(site.kind, site.weight, getattr(site, "groups", 1)).astype(np.float64)
    exact = rows.astype(np.float64) @ weight
    tables = build_tables(centroids, weight) if tables is None else tables.astype(np.float64)
    codes = encode_int8(rows, centroids) if encode_mode is EncodeMode.INT8 else encode(rows, centroids)
    approx = tables[np.arange(tables.shape[0])[None, :], codes].sum(axis=1)  # [M, N]
    norm = float(np.linalg.norm(exact))
    return float(np.linalg.norm(exact - approx) / norm) if norm > 0 else 0.0


def import_for_calibration(model, calibration, example_inputs=None, batch: int = 64):
    """``(calibration as float32, imported model)``: ``model`` is a torch module, an ``.onnx`` /
    ``.pt2`` path or an already imported ``ImportedModel``; a torch module's example input defaults
    to the first ``batch`` calibration samples (the batch the calibration then runs in)."""
    calibration = np.asarray(calibration, dtype=np.float32)
    if isinstance(model, ImportedModel):
        return calibration, model
    if example_inputs is None and not isinstance(model, (str, os.PathLike)) and hasattr(model, "state_dict"):
        example_inputs = (calibration[: min(batch, len(calibration))],)
    return calibration, import_model(model, example_inputs)


def refit_layer_tables(name: str, site, centroids: np.ndarray, rows: np.ndarray, refit, ridge_lambda: float,
                       target_rows: np.ndarray | None = None) -> np.ndarray:
    """One layer's refit tables ``[C, K, N]`` float32 from its input ``rows [M, D]``, fit to reproduce
    the exact outputs ``target_rows . W`` (no bias; default ``rows``: the layer's own inputs; the
    original model's inputs of the layer, row for row, to make up for the LUT layers before it). ``refit``: ``TableRefit.RIDGE``, MADDNESS's free tables
    (``ridge.ridge_tables``); ``TableRefit.RIDGE_WEIGHT``, ``P . W'`` with the refit weight
    ``W' = ridge.ridge_weight(...)`` (the weight that ``lut_tvm.train``'s refit would put in the model;
    here it goes into the tables, since a plan compiles against the model's own weight)."""
    refit = TableRefit(refit)
    where = f"ridge refit of plan layer {name!r}"
    groups = getattr(site, "groups", 1)  # a LayerSite, or any object with kind and weight
    if groups > 1:
        raise PlanError(f"{where}: a grouped conv (groups = {groups}) has no table refit; "
                        "exclude it or plan it without refit_tables")
    weight = as_dense_matrix(site.kind, site.weight).astype(np.float64)
    target = (rows if target_rows is None else target_rows).astype(np.float64) @ weight
    if refit is TableRefit.RIDGE:
        fitted = ridge_tables(rows, centroids, target, ridge_lambda, where)
    elif refit is TableRefit.RIDGE_WEIGHT:
        fitted = build_tables(centroids, ridge_weight(rows, centroids, target, ridge_lambda, where))
    else:
        raise PlanError(f"{where}: refit_tables = {refit.value!r} refits nothing")
    return fitted.astype(np.float32)


def ridge_refit_tables(model, calibration, plan: Plan, ridge_lambda: float = 1.0, max_rows: int = 4096,
                       seed: int = 0, example_inputs=None, refit=TableRefit.RIDGE) -> dict[str, np.ndarray]:
    """MADDNESS's refit of a plan's tables: per plan layer name, float32 ``T [C, K, N]`` fit by ridge
    regression (``refit_layer_tables``) of the layer's exact outputs ``X . W`` on the codes of
    its inputs ``X``, both from the calibration samples through the model itself (at most
    ``max_rows`` rows per layer). Put them in the plan's ``LayerPlan.tables`` to compile them (the
    compiler quantizes them with ``reference.quantize_tables``)."""
    ridge_lambda = check_ridge_lambda(ridge_lambda)
    calibration, imported = import_for_calibration(model, calibration, example_inputs)
    sites = {site.fingerprint: site for site in layer_sites(imported)}
    missing = [layer.name for layer in plan.layers if layer.weight_fingerprint not in sites]
    if missing:
        raise PlanError(f"plan layer(s) {missing} match no weight of {imported.source}: the plan was made "
                        "for another model")
    chosen = [sites[layer.weight_fingerprint] for layer in plan.layers]
    rows = collect_layer_rows(imported, calibration, chosen, max_rows, np.random.default_rng(seed))
    return {layer.name: refit_layer_tables(layer.name, site, layer.centroids, layer_rows, refit, ridge_lambda)
            for layer, site, layer_rows in zip(plan.layers, chosen, rows)}


def build_kmeans_plan(model, calibration, policy: PlanPolicy | None = None, example_inputs=None,
                      progress=None) -> Plan:
    """A plan whose centroids are k-means of each planned layer's inputs on ``calibration``.

    ``calibration`` is an array of samples stacked on axis 0 (the model's first input). For a
    torch module, ``example_inputs`` defaults to a batch of the calibration data. With
    ``policy.refit_tables`` ``ridge`` or ``ridge_weight``, each layer's tables are then refit on the
    same rows (``refit_layer_tables``, ``policy.ridge_lambda``) and carried as free tables.
    Each layer's ``reconstruction_error`` on its calibration rows is in the plan's provenance
    (``reconstruction_error``: name -> relative output error). ``progress``: called with a
    short line as each stage starts (the CLI prints them).
    """
    policy = policy or PlanPolicy()
    if progress is not None:
        progress(f"importing {imported_name(model)}")
    calibration, imported = import_for_calibration(model, calibration, example_inputs)
    chosen = select_layers(imported, policy)
    specs = []
    for name, site in chosen:
        specs.append((name, site, policy.checked_sub_len(name, site.kind, site.weight.shape)))
    rng = np.random.default_rng(policy.seed)
    say = progress or (lambda _line: None)
    say(f"running {len(calibration)} calibration samples through {len(specs)} layer(s)")
    rows = collect_layer_rows(imported, calibration, [s for _, s, _ in specs], policy.max_rows, rng)
    say(f"k-means, K = {policy.num_centroids}, on {len(specs)} layer(s)")
    layers = []
    errors = {}
    degenerate = 0  # codebooks with fewer distinct sub-vectors than K (dead ReLU channels)
    for (name, site, sub_len), layer_rows in tqdm(list(zip(specs, rows)), desc="k-means", unit="layer", disable=None):
        if len(layer_rows) < policy.num_centroids:
            raise PlanError(f"layer {name!r}: {len(layer_rows)} calibration rows for "
                            f"K = {policy.num_centroids} centroids; give more calibration data")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            centroids = kmeans_centroids(layer_rows, sub_len, policy.num_centroids, policy.seed)
        for warning in caught:
            if type(warning.message).__name__ == "ConvergenceWarning":
                degenerate += 1
            else:
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        tables = None
        if policy.refit_tables is not TableRefit.NONE:
            tables = refit_layer_tables(name, site, centroids, layer_rows, policy.refit_tables,
                                        policy.ridge_lambda)
        layers.append(LayerPlan(name, site.kind, tuple(site.weight.shape), site.fingerprint, centroids,
                                table_quant=policy.table_quant, tables=tables, groups=site.groups,
                                encode=policy.encode if site.kind is LayerKind.DENSE else EncodeMode.FLOAT))
        errors[name] = round(reconstruction_error(site, centroids, layer_rows, tables, layers[-1].encode), 6)
        LOG.info("planned %s: %s %s, V=%d, C=%d%s, relative output error %.3f", name, site.kind.value,
                 list(site.weight.shape), sub_len, centroids.shape[0],
                 "" if tables is None else f", {policy.refit_tables.value} tables", errors[name])
    if degenerate:
        LOG.warning("k-means: %d codebook(s) had fewer distinct sub-vectors than K = %d (dead ReLU "
                    "channels?): their centroids repeat, which is harmless", degenerate,
                    policy.num_centroids)
    return Plan(layers, provenance={"method": "kmeans", "policy": policy.to_dict(),
                                    "model": imported.source, "samples": int(len(calibration)),
                                    "reconstruction_error": errors})
