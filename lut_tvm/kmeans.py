"""Centroids by scikit-learn's KMeans, one clustering per codebook."""

from __future__ import annotations

import numpy as np


def kmeans_centroids(rows: np.ndarray, sub_len: int, num_centroids: int, seed: int) -> np.ndarray:
    """``[C, K, V]`` centroids: scikit-learn KMeans on each codebook's sub-vectors."""
    from sklearn.cluster import KMeans  # pylint: disable=import-outside-toplevel
    from threadpoolctl import threadpool_limits  # pylint: disable=import-outside-toplevel

    num_codebooks = rows.shape[1] // sub_len
    subs = rows.reshape(len(rows), num_codebooks, sub_len)
    centroids = np.empty((num_codebooks, num_centroids, sub_len), dtype=np.float32)
    # One thread: these fits are tiny, and OpenMP threads spinning on a busy machine made each
    # one ~50x slower (17.6 s -> 0.31 s for 64 codebooks of 1024 rows under load).
    with threadpool_limits(1):
        for c in range(num_codebooks):
            km = KMeans(n_clusters=num_centroids, n_init=1, max_iter=100, random_state=seed)
            centroids[c] = km.fit(subs[:, c, :].astype(np.float64)).cluster_centers_
    return centroids
