"""Host-side minibatching for the Solver: data stays in NumPy on the host and each
minibatch crosses to the backend once (``Backend.asarray``)."""

from __future__ import annotations

import numpy as np

from .. import random as prandom
from .._checks import check_finite_host, check_positive_int, to_host


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
    device; the labels come back to the host in ONE transfer. Returns int64 (N,).

    Rows holding NaN or inf have no meaningful label: they are refused (ValueError
    naming them), checked on the host for host data and, for device data, from a
    per-row finiteness flag of the scores that travels with the labels.
    """
    check_positive_int(batch_size, "batch_size")
    be, xp = model.backend, model.backend.xp
    on_device = be.is_array(X) and not isinstance(X, np.ndarray)  # host data always converts
    if not on_device:
        X = to_host(X, "X")
        check_finite_host(X, "X", rows=True)
    n = X.shape[0]
    if n == 0:
        return np.zeros((0,), dtype=np.int64)
    preds = []
    for start in range(0, n, batch_size):
        xb = X[start : min(start + batch_size, n), ...]  # strict refuses out-of-bounds stops
        if not on_device:
            xb = be.asarray(xb, dtype=model.dtype)
        scores = model.loss(xb)  # loss() validates shape/dtype
        label = xp.argmax(scores, axis=1)
        if on_device:  # one int64 row per sample: label, and 1 if every score is finite
            finite = xp.astype(xp.all(xp.isfinite(scores), axis=1), label.dtype)
            label = xp.stack([label, finite], axis=1)
        preds.append(label)
    host = be.to_numpy(xp.concat(preds)).astype(np.int64)
    if not on_device:
        return host
    if not host[:, 1].all():
        bad = np.flatnonzero(host[:, 1] == 0)
        shown = ", ".join(str(i) for i in bad[:10]) + (", ..." if bad.size > 10 else "")
        raise ValueError(f"X: {bad.size} of {n} rows give non-finite scores (NaN or inf in the input "
                         f"or the model; rows {shown})")
    return np.ascontiguousarray(host[:, 0])
