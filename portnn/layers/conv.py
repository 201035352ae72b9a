"""Convolution layer: im2col + one matrix product, written once in the Array API.

Layout ("NKP"): the column matrix of a batch is (N, K, P) with K = HH*WW*C
(kernel offset major, channel minor) and P = H'*W'. The forward is one
(broadcast) matmul ``w2 (F, K) @ cols (N, K, P) -> (N, F, P)``, which is
already the (N, F, H', W') output: no transposed copy of the result. The
backward is one matmul for dw, one for the column gradient and a col2im by
slice-adds.

Why this layout and not (K, N*P) columns with one big GEMM ("CN"): measured
single-threaded (float32, x(50,3,32,32) w(32,3,7,7) pad 3 and x(64,64,16,16)
w(64,64,3,3) pad 1) the two are within 5-15 % of each other, CN slightly ahead
in most rounds, but CN's dw is one GEMM reducing over N*P, so splitting the batch
changes the summation order. Here every product is per image and dw is summed
over images in order, so a chunked run does exactly the floating-point operations
of an unchunked one, and the output needs no transposed copy.

Memory bound: the column buffer holds N*K*P elements. When that exceeds
``max_col_bytes`` the batch is processed in chunks of images whose columns fit,
and the backward recomputes columns chunk by chunk instead of keeping them.
"""

from __future__ import annotations

import operator

import array_api_compat as aac

from .._checks import check_positive_int, check_same_dtype, is_float_dtype, _dtype_str
from .._xp import col2im, conv_output_size, im2col, pad2d
from ..backends import namespace

__all__ = ["conv_forward", "conv_backward", "MAX_COL_BYTES"]

#: Default working size of the im2col column buffer, in bytes (64 MiB).
MAX_COL_BYTES = 64 * 2**20


def conv_forward(x, w, b, conv_param=None):
    """Convolution (cross-correlation) with zero padding, as in torch's conv2d.

    Inputs
      x : (N, C, H, W) float32/float64
      w : (F, C, HH, WW), same dtype as x
      b : (F,), same dtype as x
      conv_param : dict
        'stride' : int >= 1 (default 1)
        'pad'    : int >= 0, zeros added on every side of H and W (default 0)
        'max_col_bytes' : int >= 1 (default MAX_COL_BYTES = 64 MiB). Working-size
            bound on the im2col buffer (N*C*HH*WW*H'*W' * itemsize). Above it the
            batch is processed in chunks of images (at least one image per
            chunk) with bitwise the same result on NumPy, and the backward
            recomputes the columns per chunk instead of caching them.
    Returns
      out   : (N, F, H', W'), x's dtype, H' = 1 + (H + 2*pad - HH) // stride
              (floor, like PyTorch), W' likewise
      cache : for conv_backward
    """
    xp = namespace(x, w, b)
    stride, pad, max_bytes = _check_conv(xp, x, w, b, conv_param)
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho, Wo = conv_output_size(H, HH, stride, pad), conv_output_size(W, WW, stride, pad)
    geom = (stride, pad, Ho, Wo)
    # (F, C, HH, WW) -> (F, HH*WW*C): the column row order of im2col.
    w2 = xp.reshape(xp.permute_dims(w, (0, 2, 3, 1)), (F, HH * WW * C))
    itemsize = xp.finfo(x.dtype).bits // 8
    chunk = _chunk_images(N, C * HH * WW * Ho * Wo * itemsize, max_bytes)

    if chunk >= N:
        cols = im2col(pad2d(x, pad), HH, WW, stride, Ho, Wo)
        out = w2 @ cols
        out += b[:, None]
        out = xp.reshape(out, (N, F, Ho, Wo))
    else:
        cols = None  # too big to keep: the backward recomputes it per chunk
        out = xp.empty((N, F, Ho, Wo), dtype=x.dtype, device=aac.device(x))
        for n0 in range(0, N, chunk):
            n1 = min(N, n0 + chunk)
            c = im2col(pad2d(x[n0:n1, ...], pad), HH, WW, stride, Ho, Wo)
            o = w2 @ c
            del c
            o += b[:, None]
            out[n0:n1, ...] = xp.reshape(o, (n1 - n0, F, Ho, Wo))
    cache = (x, w, w2, cols, geom, chunk)
    return out, cache


def conv_backward(dout, cache, need_dx=True):
    """Backward pass of conv_forward.

    Inputs
      dout  : (N, F, H', W'), the dtype of the forward's x
      cache : from conv_forward
      need_dx : internal; models pass False for their first layer, whose input
                gradient nobody uses (it skips a GEMM and the col2im)
    Returns
      dx : (N, C, H, W), or None when need_dx is False
      dw : (F, C, HH, WW)
      db : (F,)
    """
    x, w, w2, cols, (stride, pad, Ho, Wo), chunk = cache
    xp = namespace(dout, x)
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    if tuple(dout.shape) != (N, F, Ho, Wo):
        raise ValueError(f"dout: expected shape {(N, F, Ho, Wo)} (the forward's output), "
                         f"got {tuple(dout.shape)}")
    check_same_dtype("x", x, "dout", dout)
    K, P = HH * WW * C, Ho * Wo
    Hp, Wp = H + 2 * pad, W + 2 * pad

    d = xp.reshape(dout, (N, F, P))
    db = xp.sum(d, axis=(0, 2))
    dx = None
    if cols is not None:
        # Per-image dw contributions summed over the batch axis in order; the
        # chunked branch continues the same running sum (NumPy reduces a leading axis
        # sequentially), so both are bitwise equal.
        dw2 = xp.sum(d @ cols.mT, axis=0)
        if need_dx:
            dxp = col2im(w2.mT @ d, C, Hp, Wp, HH, WW, stride, Ho, Wo)
            dx = dxp[:, :, pad:pad + H, pad:pad + W] if pad else dxp
    else:
        dw2 = None
        if need_dx:
            dx = xp.empty((N, C, H, W), dtype=x.dtype, device=aac.device(x))
        for n0 in range(0, N, chunk):
            n1 = min(N, n0 + chunk)
            c = im2col(pad2d(x[n0:n1, ...], pad), HH, WW, stride, Ho, Wo)
            dc = d[n0:n1, ...]
            part = dc @ c.mT  # (n, F, K)
            del c  # free the columns before the column gradient is allocated
            if dw2 is not None:
                part = xp.concat([dw2[None, ...], part], axis=0)
            dw2 = xp.sum(part, axis=0)
            del part
            if need_dx:
                dxp = col2im(w2.mT @ dc, C, Hp, Wp, HH, WW, stride, Ho, Wo)
                dx[n0:n1, ...] = dxp[:, :, pad:pad + H, pad:pad + W] if pad else dxp
    dw = xp.permute_dims(xp.reshape(dw2, (F, HH, WW, C)), (0, 3, 1, 2))
    return dx, dw, db


# -- helpers -------------------------------------------------------------------


def _chunk_images(n: int, col_bytes_per_image: int, max_bytes: int) -> int:
    """Images per chunk so that a chunk's columns fit in max_bytes (at least 1)."""
    return max(1, min(n, max_bytes // max(1, col_bytes_per_image)))


def _int_param(params, key, default, minimum):
    value = params.get(key, default)
    name = f"conv_param['{key}']"
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    try:
        value = operator.index(value)  # accepts NumPy integers, rejects floats
    except TypeError:
        raise TypeError(f"{name}: expected an integer >= {minimum}, got {value!r}") from None
    return check_positive_int(value, name, minimum)


def _check_float(xp, a, name, ndim):
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        raise TypeError(f"{name}: expected an array, got {type(a).__name__}")
    if not is_float_dtype(xp, a.dtype):
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {_dtype_str(a.dtype)}")
    if a.ndim != ndim:
        what = {4: "(N, C, H, W)" if name == "x" else "(F, C, HH, WW)", 1: "(F,)"}[ndim]
        raise ValueError(f"{name}: expected a {ndim}-d array {what}, got shape {tuple(a.shape)}")


def _check_conv(xp, x, w, b, conv_param):
    if conv_param is None:
        conv_param = {}
    if not isinstance(conv_param, dict):
        raise TypeError(f"conv_param: expected a dict with 'stride' and 'pad', got {type(conv_param).__name__}")
    _check_float(xp, x, "x", 4)
    _check_float(xp, w, "w", 4)
    _check_float(xp, b, "b", 1)
    check_same_dtype("x", x, "w", w)
    check_same_dtype("x", x, "b", b)
    N, C, H, W = x.shape
    F, Cw, HH, WW = w.shape
    if Cw != C:
        raise ValueError(f"w: expected {C} input channels (x has shape {tuple(x.shape)}), "
                         f"got w of shape {tuple(w.shape)}")
    if tuple(b.shape) != (F,):
        raise ValueError(f"b: expected shape ({F},) (one bias per filter of w), got {tuple(b.shape)}")
    stride = _int_param(conv_param, "stride", 1, 1)
    pad = _int_param(conv_param, "pad", 0, 0)
    max_bytes = _int_param(conv_param, "max_col_bytes", MAX_COL_BYTES, 1)
    if HH < 1 or WW < 1 or F < 1:
        raise ValueError(f"w: expected a non-empty filter bank, got shape {tuple(w.shape)}")
    if HH > H + 2 * pad or WW > W + 2 * pad:
        raise ValueError(
            f"w: kernel {HH}x{WW} is larger than the padded input {H + 2 * pad}x{W + 2 * pad} "
            f"(x spatial size {H}x{W}, pad {pad})"
        )
    return stride, pad, max_bytes
