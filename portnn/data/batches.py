"""Host-side minibatching for the Solver: data stays in NumPy on the host and each
minibatch crosses to the backend once (``Backend.asarray``)."""

from __future__ import annotations

import numpy as np

from .. import random as prandom
from ..backends import backend_of


def to_host(a, name: str) -> np.ndarray:
    """Any backend array (or array-like) -> NumPy array on the host."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        return backend_of(a).to_numpy(a)
    try:
        return np.asarray(a)
    except Exception as e:
        raise TypeError(f"{name}: expected an array, got {type(a).__name__}") from e


def check_labels_host(y: np.ndarray, n: int, num_classes: int, name: str) -> np.ndarray:
    """Integer labels of shape (n,) in [0, num_classes) -> int64 copy."""
    if y.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer labels, got dtype {y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},) to match the images, got {y.shape}")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"{name}: labels must lie in [0, {num_classes}), got values in [{y.min()}, {y.max()}]"
        )
    return y.astype(np.int64)


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the n training samples in ``epoch``: a pure function of
    (seed, epoch), so a resumed run sees exactly the batches it would have seen."""
    return prandom.host_generator(prandom.fold_in(seed, epoch)).permutation(n)


def subsample(seed: int, n: int, k) -> np.ndarray:
    """Indices of k of n samples (all of them, in order, when k is None or >= n)."""
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(prandom.host_generator(seed).choice(n, size=k, replace=False))
