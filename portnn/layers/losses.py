"""Classification losses: softmax cross-entropy and multiclass SVM (hinge).

Each public loss returns ``(loss, dx)`` with ``loss`` a Python float (one
device->host read). Models and the Solver use the ``*_device`` variants, which
return the loss as a 0-d array on the device so the training loop reads it only
once per report instead of once per step.
"""

from __future__ import annotations

import array_api_extra as xpx

from .._checks import check_float_array, check_labels
from ..backends import namespace


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
    idx = xp.astype(y, xp.int64)[:, None]
    loss = -xp.sum(xp.take_along_axis(log_probs, idx, axis=1)) / n
    dx = (xp.exp(log_probs) - xpx.one_hot(y, x.shape[1], dtype=x.dtype, xp=xp)) / n
    return loss, dx


def svm_loss_device(x, y):
    """Multiclass hinge loss (margin 1) without validation or host reads.

    x : (N, C) float scores; y : (N,) integer labels in [0, C)
    Returns loss : 0-d array, dx : (N, C)
    """
    xp = namespace(x, y)
    n = x.shape[0]
    onehot = xpx.one_hot(y, x.shape[1], dtype=x.dtype, xp=xp)
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
