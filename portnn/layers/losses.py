"""Classification losses: softmax cross-entropy and multiclass SVM (hinge).

Each public loss returns ``(loss, dx)`` with ``loss`` a Python float (one
device->host read). Models and the Solver use the ``*_device`` variants, which
return the loss as a 0-d array on the device so the training loop reads it only
once per report instead of once per step.
"""

from __future__ import annotations

import array_api_compat as aac

from .._checks import check_float_array, check_labels
from ..backends import namespace


def _one_hot(xp, y, num_classes, dtype):
    """(N,) labels -> (N, C) 0/1 in ``dtype``: one comparison with a class row (two
    operations, no host read; array-api-extra's one_hot issues seven on torch,
    two of them host reads of the label range)."""
    classes = xp.arange(num_classes, dtype=y.dtype, device=aac.device(y))
    return xp.astype(y[:, None] == classes, dtype)


def _check(x, y):
    xp = namespace(x, y)
    check_float_array(xp, x, "x", ndim=2)
    check_labels(xp, y, x.shape[0], x.shape[1], "y")
    if x.shape[0] == 0:
        raise ValueError("x: expected a non-empty batch (N >= 1), got shape " f"{tuple(x.shape)}")
    return xp


def softmax_loss_device(x, y):
    """Softmax cross-entropy without validation or host reads.

    x : (N, C) float scores; y : (N,) integer labels in [0, C)
    Returns loss : 0-d array (x's dtype, on x's device), dx : (N, C)
    """
    xp = namespace(x, y)
    n = x.shape[0]
    shifted = x - xp.max(x, axis=1, keepdims=True)
    log_z = xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
    log_probs = shifted - log_z
    # torch's take_along_axis wants int64 indices.
    idx = xp.astype(y, xp.int64, copy=False)[:, None]
    loss = -xp.sum(xp.take_along_axis(log_probs, idx, axis=1)) / n
    dx = (xp.exp(log_probs) - _one_hot(xp, y, x.shape[1], x.dtype)) / n
    return loss, dx


def svm_loss_device(x, y):
    """Multiclass hinge loss (margin 1) without validation or host reads.

    x : (N, C) float scores; y : (N,) integer labels in [0, C)
    Returns loss : 0-d array, dx : (N, C)
    """
    xp = namespace(x, y)
    n = x.shape[0]
    onehot = _one_hot(xp, y, x.shape[1], x.dtype)
    correct = xp.sum(x * onehot, axis=1, keepdims=True)
    margins = xp.maximum(x - correct + 1.0, 0.0) * (1.0 - onehot)
    loss = xp.sum(margins) / n
    positive = xp.astype(margins > 0, x.dtype)
    dx = (positive - onehot * xp.sum(positive, axis=1, keepdims=True)) / n
    return loss, dx


def softmax_loss(x, y):
    """Softmax cross-entropy loss.

    x : (N, C) float scores; y : (N,) integer labels, 0 <= y[i] < C
    Returns loss : Python float (mean over the batch), dx : (N, C) like x
    """
    _check(x, y)
    loss, dx = softmax_loss_device(x, y)
    return float(loss), dx


def svm_loss(x, y):
    """Multiclass SVM (hinge) loss with margin 1.

    x : (N, C) float scores; y : (N,) integer labels, 0 <= y[i] < C
    Returns loss : Python float (mean over the batch), dx : (N, C) like x
    """
    _check(x, y)
    loss, dx = svm_loss_device(x, y)
    return float(loss), dx
