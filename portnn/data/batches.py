"""Host-side minibatching for the Solver: data stays in NumPy on the host and each
minibatch crosses to the backend once (``Backend.asarray``)."""

from __future__ import annotations

import numpy as np

from .. import random as prandom
from .._checks import check_positive_int, to_host


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
