"""Sandwich layers: common layer sequences fused into one forward/backward pair.

Each ``*_forward`` returns ``(out, cache)``; each ``*_backward(dout, cache)``
returns the gradients of the forward's array arguments, in argument order.

| name                      | sequence                               | backward returns            |
|---------------------------|----------------------------------------|-----------------------------|
| affine_relu               | affine - relu                          | dx, dw, db                  |
| affine_bn_relu            | affine - batchnorm - relu              | dx, dw, db, dgamma, dbeta   |
| affine_ln_relu            | affine - layernorm - relu              | dx, dw, db, dgamma, dbeta   |
| conv_relu                 | conv - relu                            | dx, dw, db                  |
| conv_relu_pool            | conv - relu - max pool                 | dx, dw, db                  |
| conv_bn_relu              | conv - spatial batchnorm - relu        | dx, dw, db, dgamma, dbeta   |
| conv_bn_relu_pool         | conv - spatial batchnorm - relu - pool | dx, dw, db, dgamma, dbeta   |

``conv_batchnorm_relu*`` are aliases of ``conv_bn_relu*``. The backward
functions take an internal ``need_dx=False`` that models use on their first
layer, whose input gradient nobody needs.

A sandwich's cache is a plain tuple of its parts' caches; its backward refuses
anything else (TypeError naming the sandwich), and each part checks its own
piece: a wrongly shaped dout is refused by the first part it reaches (e.g.
``relu_backward: dout: expected shape ...``).
"""

from .layers import (
    affine_backward,
    affine_forward,
    batchnorm_backward,
    batchnorm_forward,
    layernorm_backward,
    layernorm_forward,
    relu_backward,
    relu_forward,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
)
from .layers.conv import conv_backward, conv_forward
from .layers.pool import max_pool_backward, max_pool_forward


def _parts(cache, n, fn):
    """The n part caches of a sandwich's cache, or a TypeError naming the sandwich."""
    if type(cache) is not tuple or len(cache) != n:
        forward = fn.replace("_backward", "_forward")
        raise TypeError(f"{fn}: cache must be what {forward} returned, got {type(cache).__name__}")
    return cache


def affine_relu_forward(x, w, b):
    """x (N, d1..dk), w (D, M), b (M,) -> out (N, M)."""
    a, fc_cache = affine_forward(x, w, b)
    out, relu_cache = relu_forward(a)
    return out, (fc_cache, relu_cache)


def affine_relu_backward(dout, cache, need_dx=True):
    fc_cache, relu_cache = _parts(cache, 2, "affine_relu_backward")
    return affine_backward(relu_backward(dout, relu_cache), fc_cache, need_dx)


def _affine_norm_relu_forward(norm_forward, x, w, b, gamma, beta, param):
    a, fc_cache = affine_forward(x, w, b)
    an, norm_cache = norm_forward(a, gamma, beta, param)
    out, relu_cache = relu_forward(an)
    return out, (fc_cache, norm_cache, relu_cache)


def _affine_norm_relu_backward(norm_backward, dout, cache, need_dx, fn):
    fc_cache, norm_cache, relu_cache = _parts(cache, 3, fn)
    da, dgamma, dbeta = norm_backward(relu_backward(dout, relu_cache), norm_cache)
    dx, dw, db = affine_backward(da, fc_cache, need_dx)
    return dx, dw, db, dgamma, dbeta


def affine_bn_relu_forward(x, w, b, gamma, beta, bn_param):
    """affine - batchnorm - relu; gamma, beta (M,); bn_param as batchnorm_forward."""
    return _affine_norm_relu_forward(batchnorm_forward, x, w, b, gamma, beta, bn_param)


def affine_bn_relu_backward(dout, cache, need_dx=True):
    return _affine_norm_relu_backward(batchnorm_backward, dout, cache, need_dx, "affine_bn_relu_backward")


def affine_ln_relu_forward(x, w, b, gamma, beta, ln_param):
    """affine - layernorm - relu; gamma, beta (M,); ln_param as layernorm_forward."""
    return _affine_norm_relu_forward(layernorm_forward, x, w, b, gamma, beta, ln_param)


def affine_ln_relu_backward(dout, cache, need_dx=True):
    return _affine_norm_relu_backward(layernorm_backward, dout, cache, need_dx, "affine_ln_relu_backward")


def conv_relu_forward(x, w, b, conv_param):
    """x (N, C, H, W), w (F, C, HH, WW), b (F,) -> out (N, F, H', W')."""
    a, conv_cache = conv_forward(x, w, b, conv_param)
    out, relu_cache = relu_forward(a)
    return out, (conv_cache, relu_cache)


def conv_relu_backward(dout, cache, need_dx=True):
    conv_cache, relu_cache = _parts(cache, 2, "conv_relu_backward")
    return conv_backward(relu_backward(dout, relu_cache), conv_cache, need_dx=need_dx)


def conv_relu_pool_forward(x, w, b, conv_param, pool_param):
    """conv - relu - max pool: x (N, C, H, W) -> (N, F, H'', W'').

    Computed as conv - pool - relu: max commutes with the monotone relu, so the
    outputs are identical, and so are the gradients (where a window's max is
    positive its first maximum is the same element before and after relu; where
    it is <= 0 the relu passes no gradient either way). The relu then runs on the
    pooled map, 4x smaller for a 2x2 pool.
    """
    a, conv_cache = conv_forward(x, w, b, conv_param)
    pooled, pool_cache = max_pool_forward(a, pool_param)
    out, relu_cache = relu_forward(pooled)
    return out, (conv_cache, pool_cache, relu_cache)


def conv_relu_pool_backward(dout, cache, need_dx=True):
    conv_cache, pool_cache, relu_cache = _parts(cache, 3, "conv_relu_pool_backward")
    da = max_pool_backward(relu_backward(dout, relu_cache), pool_cache)
    return conv_backward(da, conv_cache, need_dx=need_dx)


def conv_bn_relu_forward(x, w, b, gamma, beta, conv_param, bn_param):
    """conv - spatial batchnorm - relu; gamma, beta (F,)."""
    a, conv_cache = conv_forward(x, w, b, conv_param)
    an, bn_cache = spatial_batchnorm_forward(a, gamma, beta, bn_param)
    out, relu_cache = relu_forward(an)
    return out, (conv_cache, bn_cache, relu_cache)


def conv_bn_relu_backward(dout, cache, need_dx=True):
    conv_cache, bn_cache, relu_cache = _parts(cache, 3, "conv_bn_relu_backward")
    da, dgamma, dbeta = spatial_batchnorm_backward(relu_backward(dout, relu_cache), bn_cache)
    dx, dw, db = conv_backward(da, conv_cache, need_dx=need_dx)
    return dx, dw, db, dgamma, dbeta


def conv_bn_relu_pool_forward(x, w, b, gamma, beta, conv_param, bn_param, pool_param):
    """conv - spatial batchnorm - relu - max pool."""
    s, cache = conv_bn_relu_forward(x, w, b, gamma, beta, conv_param, bn_param)
    out, pool_cache = max_pool_forward(s, pool_param)
    return out, (cache, pool_cache)


def conv_bn_relu_pool_backward(dout, cache, need_dx=True):
    cbr_cache, pool_cache = _parts(cache, 2, "conv_bn_relu_pool_backward")
    return conv_bn_relu_backward(max_pool_backward(dout, pool_cache), cbr_cache, need_dx)


conv_batchnorm_relu_forward = conv_bn_relu_forward
conv_batchnorm_relu_backward = conv_bn_relu_backward
conv_batchnorm_relu_pool_forward = conv_bn_relu_pool_forward
conv_batchnorm_relu_pool_backward = conv_bn_relu_pool_backward
