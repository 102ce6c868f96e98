"""MADDNESS's table refit: LUT tables fit by ridge regression on a layer's real outputs.

With the codes of ``M`` input rows as a one-hot matrix ``G [M, C*K]`` (one 1 per codebook),
the LUT layer's output is ``G . T`` for tables ``T [C*K, N]``. k-means tables are ``P . W``
(each centroid times its slice of the weight); the refit instead takes

    T = argmin_T ||G . T - Y||^2 + lambda ||T||^2,     Y = X . W (the exact layer output),

solved by scikit-learn's ``Ridge`` on the sparse ``G``. The sum over codebooks is fit jointly,
so errors of one codebook are compensated by the others. ``ridge_weight`` is the same fit with
the tables kept of the form ``P . W'`` (a refit weight, design matrix = the decoded rows ``G . P``):
weaker, but such tables are what a plan (centroids + the model's weight) compiles to.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import PlanError
from .reference import encode


def check_ridge_lambda(value, where: str = "ridge_lambda") -> float:
    """``value`` as a float if it is a positive finite number; else PlanError naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise PlanError(f"{where} = {value!r} must be a positive finite number")
    value = float(value)
    if value == 0:
        raise PlanError(f"{where} = 0: the one-hot system is singular without it (every codebook's "
                        "columns sum to the same all-ones column); use a positive value such as 1")
    if not (value > 0 and math.isfinite(value)):
        raise PlanError(f"{where} = {value} must be a positive finite number")
    return value


def one_hot_codes(codes: np.ndarray, num_centroids: int):
    """Sparse ``G [M, C*K]`` (CSR, float64) with ``G[m, c*K + codes[m, c]] = 1``."""
    from scipy import sparse  # pylint: disable=import-outside-toplevel

    rows, num_codebooks = codes.shape
    columns = (np.arange(num_codebooks)[None, :] * num_centroids + codes.astype(np.int64)).ravel()
    data = np.ones(rows * num_codebooks)
    indptr = np.arange(0, rows * num_codebooks + 1, num_codebooks)
    return sparse.csr_matrix((data, columns, indptr), shape=(rows, num_codebooks * num_centroids))


def _ridge_fit(design, target: np.ndarray, ridge_lambda: float) -> np.ndarray:
    """``argmin_B ||design . B - target||^2 + lambda ||B||^2`` as ``[features, N]`` float64."""
    from sklearn.linear_model import Ridge  # pylint: disable=import-outside-toplevel

    solver = "cholesky"  # normal equations: features (C*K or D) are few next to rows
    model = Ridge(alpha=ridge_lambda, fit_intercept=False, solver=solver).fit(design, target)
    return np.asarray(model.coef_, dtype=np.float64).reshape(target.shape[1], -1).T


def _check_rows(rows: np.ndarray, centroids: np.ndarray, target: np.ndarray, where: str) -> None:
    num_codebooks, num_centroids, sub_len = centroids.shape
    if rows.ndim != 2 or rows.shape[1] != num_codebooks * sub_len:
        raise PlanError(f"{where}: rows {list(rows.shape)} are not [M, C*V = {num_codebooks * sub_len}]")
    if target.ndim != 2 or len(target) != len(rows):
        raise PlanError(f"{where}: target outputs {list(target.shape)} are not one row per input row "
                        f"({len(rows)})")
    if len(rows) < num_centroids:
        raise PlanError(f"{where}: {len(rows)} rows are too few to refit tables of K = {num_centroids}")


def ridge_tables(rows: np.ndarray, centroids: np.ndarray, target: np.ndarray, ridge_lambda: float,
                 where: str = "ridge refit") -> np.ndarray:
    """Real-valued tables ``[C, K, N]`` (float64) fit so that the encoded ``rows`` give ``target``.

    ``rows [M, C*V]`` are the layer's inputs, ``target [M, N]`` the outputs to reproduce without
    bias (``rows . W`` for MADDNESS; the original model's outputs for a sequential refit).
    """
    ridge_lambda = check_ridge_lambda(ridge_lambda, f"{where}: ridge_lambda")
    _check_rows(rows, centroids, target, where)
    num_codebooks, num_centroids, _ = centroids.shape
    design = one_hot_codes(encode(rows, centroids), num_centroids)
    fitted = _ridge_fit(design, target.astype(np.float64), ridge_lambda)
    return fitted.reshape(num_codebooks, num_centroids, target.shape[1])


def ridge_weight(rows: np.ndarray, centroids: np.ndarray, target: np.ndarray, ridge_lambda: float,
                 where: str = "ridge refit") -> np.ndarray:
    """A refit weight ``W' [D, N]`` (float64): tables ``P . W'`` fit by ridge regression of
    ``target`` on the decoded rows (each sub-vector replaced by its nearest centroid)."""
    ridge_lambda = check_ridge_lambda(ridge_lambda, f"{where}: ridge_lambda")
    _check_rows(rows, centroids, target, where)
    num_codebooks = centroids.shape[0]
    codes = encode(rows, centroids)
    decoded = centroids.astype(np.float64)[np.arange(num_codebooks)[None, :], codes.astype(np.int64)]
    return _ridge_fit(decoded.reshape(len(rows), -1), target.astype(np.float64), ridge_lambda)
