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


def predict_labels(model, X, batch_size: int = 100) -> np.ndarray:
    """Argmax labels of ``model`` for X (N, ...), scored in batches on the model's
    device; the labels come back to the host in ONE transfer. Returns int64 (N,)."""
    from .._checks import check_positive_int

    check_positive_int(batch_size, "batch_size")
    be, xp = model.backend, model.backend.xp
    on_device = be.is_array(X) and not isinstance(X, np.ndarray)  # host data always converts
    if not on_device:
        X = to_host(X, "X")
    n = X.shape[0]
    if n == 0:
        return np.zeros((0,), dtype=np.int64)
    preds = []
    for start in range(0, n, batch_size):
        xb = X[start : start + batch_size, ...]
        if not on_device:
            xb = be.asarray(xb, dtype=model.dtype)
        preds.append(xp.argmax(model.loss(xb), axis=1))  # loss() validates shape/dtype
    return be.to_numpy(xp.concat(preds)).astype(np.int64)
