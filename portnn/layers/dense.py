"""Fully connected (affine) and ReLU layers."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from .._checks import check_cache, check_dout, check_float_array, check_same_dtype
from ..backends import namespace

__all__ = ["affine_forward", "affine_backward", "relu_forward", "relu_backward", "AffineCache", "ReluCache"]


class AffineCache(NamedTuple):
    """affine_forward -> affine_backward (the output is (x.shape[0], w.shape[1]), x's dtype)."""

    x: Any  # (N, d1, ..., dk): the forward's input
    w: Any  # (D, M): the weights


class ReluCache(NamedTuple):
    """relu_forward -> relu_backward."""

    out: Any  # the forward's output (its shape and dtype are dout's; > 0 where x was)

    @property
    def shape(self) -> tuple:
        """The forward output's shape (that of dout and dx)."""
        return tuple(self.out.shape)


def affine_forward(x, w, b):
    """out = x.reshape(N, D) @ w + b.

    Inputs
      x : (N, d1, ..., dk) float, with D = d1 * ... * dk
      w : (D, M) same dtype as x
      b : (M,)   same dtype as x
    Returns
      out   : (N, M)
      cache : AffineCache (x, w)
    """
    xp = namespace(x, w, b)
    check_float_array(xp, x, "x", min_ndim=2, layout="(N, d1, ...)")
    check_float_array(xp, w, "w", ndim=2)
    check_float_array(xp, b, "b", ndim=1)
    check_same_dtype("x", x, "w", w)
    check_same_dtype("x", x, "b", b)
    n = x.shape[0]
    d = math.prod(x.shape[1:])
    if w.shape[0] != d:
        raise ValueError(
            f"w: expected shape ({d}, M) to match x of shape {tuple(x.shape)} "
            f"(D = {d} features per sample), got {tuple(w.shape)}"
        )
    if b.shape[0] != w.shape[1]:
        raise ValueError(f"b: expected shape ({w.shape[1]},) to match w's columns, got {tuple(b.shape)}")
    out = xp.reshape(x, (n, d)) @ w + b
    return out, AffineCache(x, w)


def affine_backward(dout, cache, need_dx=True):
    """Gradients of affine_forward.

    Inputs
      dout  : (N, M) upstream gradient, x's dtype (else a ValueError / TypeError)
      cache : AffineCache from affine_forward
      need_dx : internal; models pass False for the first layer, whose input
                gradient nobody uses (it is ~40% of that layer's backward FLOPs)
    Returns
      dx : (N, d1, ..., dk) (None when need_dx is False), dw : (D, M), db : (M,)
    """
    check_cache(cache, "affine_backward", AffineCache, "affine_forward")
    x, w = cache
    xp = check_dout(dout, "affine_backward", (x.shape[0], w.shape[1]), x.dtype, w)
    # An explicit D (not -1): reshape cannot infer -1 when the batch is empty.
    x2 = xp.reshape(x, (x.shape[0], w.shape[0]))
    dw = x2.mT @ dout
    db = xp.sum(dout, axis=0)
    dx = xp.reshape(dout @ w.mT, x.shape) if need_dx else None
    return dx, dw, db


def relu_forward(x):
    """out = max(x, 0), elementwise. x: any shape, float. Returns (out, ReluCache)."""
    xp = namespace(x)
    check_float_array(xp, x, "x")
    out = xp.maximum(x, 0.0)
    return out, ReluCache(out)


def relu_backward(dout, cache):
    """dx = dout where the forward input was > 0, else 0.

    dout: the forward output's shape and dtype (else a ValueError / TypeError);
    cache: ReluCache from relu_forward. Returns dx, dout's shape and dtype.
    """
    check_cache(cache, "relu_backward", ReluCache, "relu_forward")
    out = cache.out
    xp = check_dout(dout, "relu_backward", out.shape, out.dtype, out)
    # Multiplying by a 0/1 mask is several times faster than xp.where here
    # (measurements: docs/benchmarks.md).
    return dout * xp.astype(out > 0, dout.dtype)
