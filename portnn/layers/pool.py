"""Max and average pooling, written once in the Array API.

Forward: a running max over the pool_height*pool_width window-offset slices,
keeping the offset of each window's FIRST maximum (strict ``>``), so the
backward sends every window's gradient to exactly one element, as torch and
the classic loop implementation do. An equality mask (``x == max``) would
instead duplicate the gradient over tied elements, which are common after a
ReLU.

Both passes read/write the input through a "phase split" (portnn._windows):
the stride x stride sub-images x[:, :, a::s, b::s] are copied once into one
buffer, where every window offset is a row-contiguous block instead of a
stride-s view, so each elementwise pass runs on unit-stride data. For windows
that tile the input (2x2 stride 2) this is the reshape-to-(N, C, H/2, 2, W/2, 2)
trick and the backward writes each offset's gradient once, without
accumulation; overlapping windows (3x3 stride 2) add into the phase buffer.

Average pooling (same pool_param, no padding) is the window mean
(portnn._windows.window_mean: a sum along H, then along W, divided by
pool_height*pool_width in x's dtype); its backward spreads each window's
dout / (pool_height*pool_width) over the window, overlapping windows
accumulating, uncovered elements (gaps, border) getting zero.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .._checks import (
    array_origin,
    check_cache,
    check_dout,
    check_float_array,
    check_int,
    check_is_array,
    check_keys,
    dtype_str,
)
from .._windows import conv_output_size, window_max, window_max_grad, window_mean, window_mean_grad
from ..backends import namespace

__all__ = ["max_pool_forward", "max_pool_backward", "MaxPoolCache", "avg_pool_forward", "avg_pool_backward",
           "AvgPoolCache", "POOL_PARAM_KEYS"]

#: The keys pool_param holds, all required (any other, e.g. 'pad', is a ValueError).
POOL_PARAM_KEYS = ("pool_height", "pool_width", "stride")


class MaxPoolCache(NamedTuple):
    """What max_pool_backward needs from max_pool_forward."""

    x_shape: tuple  # (N, C, H, W) of the forward's input
    dtype: Any  # the forward's dtype (dout must match)
    argmax: Any  # (N, C, H', W') small integer: row-major offset of each window's first maximum
    pool_height: int
    pool_width: int
    stride: int


def max_pool_forward(x, pool_param):
    """Max pooling over pool_height x pool_width windows, no padding.

    Inputs
      x : (N, C, H, W) float32/float64
      pool_param : dict with 'pool_height', 'pool_width', 'stride' (ints >= 1), no
                   other key (a ValueError)
    Returns
      out   : (N, C, H', W'), x's dtype, H' = 1 + (H - pool_height) // stride,
              W' = 1 + (W - pool_width) // stride
      cache : MaxPoolCache for max_pool_backward (x's shape and dtype, the window
              geometry and the (N, C, H', W') small-integer offset of each
              window's first maximum)
    """
    ph, pw, stride, Ho, Wo = _pool_geometry(x, pool_param)
    out, arg = window_max(x, ph, pw, stride, Ho, Wo)
    return out, MaxPoolCache(x_shape=tuple(x.shape), dtype=x.dtype, argmax=arg,
                             pool_height=ph, pool_width=pw, stride=stride)


def max_pool_backward(dout, cache):
    """Backward pass of max_pool_forward.

    Inputs
      dout  : (N, C, H', W'), the forward's dtype
      cache : MaxPoolCache from max_pool_forward
    Returns
      dx : (N, C, H, W); each window's gradient lands on its first maximum
           (row-major order), overlapping windows accumulate.
    """
    check_cache(cache, "max_pool_backward", MaxPoolCache, "max_pool_forward")
    check_is_array(dout, "max_pool_backward: dout")
    arg = cache.argmax
    namespace(dout, arg)  # same backend and device, or a clear error
    if tuple(dout.shape) != tuple(arg.shape):
        raise ValueError(f"dout: expected shape {tuple(arg.shape)} (the forward's output), "
                         f"got {tuple(dout.shape)}")
    if dout.dtype != cache.dtype:
        raise TypeError(f"dout: expected dtype {dtype_str(cache.dtype)} (the dtype of x), "
                        f"got {dtype_str(dout.dtype)}")
    height, width = cache.x_shape[2], cache.x_shape[3]
    return window_max_grad(dout, arg, cache.pool_height, cache.pool_width, cache.stride, height, width)


class AvgPoolCache(NamedTuple):
    """What avg_pool_backward needs from avg_pool_forward (no arrays: the mean's
    gradient depends on the geometry only)."""

    x_shape: tuple  # (N, C, H, W) of the forward's input
    dtype: Any  # the forward's dtype (dout must match)
    out_shape: tuple  # (N, C, H', W') of the forward's output
    pool_height: int
    pool_width: int
    stride: int
    origin: tuple  # (namespace, device) of x: dout must come from the same place


def avg_pool_forward(x, pool_param):
    """Average pooling over pool_height x pool_width windows, no padding.

    Inputs
      x : (N, C, H, W) float32/float64
      pool_param : dict with 'pool_height', 'pool_width', 'stride' (ints >= 1), no
                   other key (a ValueError)
    Returns
      out   : (N, C, H', W'), x's dtype, the mean of each window,
              H' = 1 + (H - pool_height) // stride, W' = 1 + (W - pool_width) // stride
      cache : AvgPoolCache for avg_pool_backward (x's shape and dtype, the output
              shape and the window geometry)
    """
    ph, pw, stride, Ho, Wo = _pool_geometry(x, pool_param)
    out = window_mean(x, ph, pw, stride, Ho, Wo)
    return out, AvgPoolCache(x_shape=tuple(x.shape), dtype=x.dtype, out_shape=tuple(x.shape[:2]) + (Ho, Wo),
                             pool_height=ph, pool_width=pw, stride=stride, origin=array_origin(namespace(x), x))


def avg_pool_backward(dout, cache):
    """Backward pass of avg_pool_forward.

    Inputs
      dout  : (N, C, H', W'), the forward's dtype
      cache : AvgPoolCache from avg_pool_forward
    Returns
      dx : (N, C, H, W), dout's dtype; each window's dout / (pool_height*pool_width)
           lands on every element of the window, overlapping windows accumulate,
           elements no window covers get zero.
    """
    check_cache(cache, "avg_pool_backward", AvgPoolCache, "avg_pool_forward")
    check_dout(dout, "avg_pool_backward", cache.out_shape, cache.dtype, origin=cache.origin)
    height, width = cache.x_shape[2], cache.x_shape[3]
    return window_mean_grad(dout, cache.pool_height, cache.pool_width, cache.stride, height, width)


def _pool_geometry(x, pool_param):
    """The checked window (pool_height, pool_width, stride) and the output's H', W'."""
    ph, pw, stride = _check_pool(namespace(x), x, pool_param)
    H, W = x.shape[2], x.shape[3]
    return ph, pw, stride, conv_output_size(H, ph, stride), conv_output_size(W, pw, stride)


def _check_pool(xp, x, pool_param):
    check_float_array(xp, x, "x", ndim=4, layout="(N, C, H, W)")
    if not isinstance(pool_param, dict):
        raise TypeError(f"pool_param: expected a dict with 'pool_height', 'pool_width', 'stride', "
                        f"got {type(pool_param).__name__}")
    check_keys(pool_param, "pool_param", POOL_PARAM_KEYS)
    vals = []
    for key in POOL_PARAM_KEYS:
        name = f"pool_param['{key}']"
        if key not in pool_param:
            raise ValueError(f"{name}: missing; expected an integer >= 1")
        vals.append(check_int(pool_param[key], name, minimum=1))
    ph, pw, stride = vals
    H, W = x.shape[2], x.shape[3]
    if ph > H or pw > W:
        raise ValueError(f"pool_param: window {ph}x{pw} is larger than the input {H}x{W} "
                         f"(x shape {tuple(x.shape)})")
    return ph, pw, stride
