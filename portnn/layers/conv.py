"""Convolution layer: im2col + one matrix product per pass, written once in the Array API.

Layout ("CN"): the column matrix is (K, N*P) with K = HH*WW*C (kernel offset
major, channel minor) and P = H'*W' (portnn._xp.im2col). Each pass is then ONE
big GEMM with contiguous operands:
  forward   out2 (F, N*P) = w2 (F, K) @ cols (K, N*P)
  backward  dw2ᵀ (K, F)   = cols (K, N*P) @ d2ᵀ (N*P, F)
            dcols (K, N*P) = w2ᵀ (K, F) @ d2 (F, N*P), then col2im by slice-adds.
The output is returned as the (F, N) -> (N, F) transposed VIEW of out2 (no
copy); the backward's ``permute_dims(dout, (1, 0, 2, 3))`` of a gradient that
kept that layout (relu/pool backward preserve it) is free again.

Why this layout (measured on the benchmark shapes, benchmarks/, 2 threads):
the previous per-image layout (N, K, P) issued one small GEMM per image and
pass (150 BLAS calls for a 50-image conv), and multi-threaded OpenBLAS pays a
thread wake-up per call; one GEMM per pass was 1.3-2x faster end to end. dw is
computed as (cols @ d2ᵀ)ᵀ because the other orientation, a (F, N*P) @ (N*P, K)
product with a long reduction, hits a 100x OpenBLAS slow path on 2 threads.

Memory bound: the column buffer holds K*N*P elements. When that exceeds
``max_col_bytes`` the batch is processed in chunks of images whose columns
fit, and the backward recomputes columns chunk by chunk instead of keeping
them. dw is then a sum of per-chunk products, so a chunked run agrees with an
unchunked one to rounding (not bitwise).
"""

from __future__ import annotations

import operator

import array_api_compat as aac

from .._checks import check_positive_int, check_same_dtype, is_float_dtype, _dtype_str
from .._xp import col2im, conv_output_size, im2col
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
            chunk), and the backward recomputes the columns per chunk instead
            of caching them; results agree with an unchunked run to rounding.
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
    bias = xp.reshape(b, (F, 1))

    if chunk >= N:
        cols = im2col(x, HH, WW, stride, pad, Ho, Wo)
        out2 = w2 @ cols
        out2 += bias
        out = xp.reshape(out2, (F, N, Ho, Wo))
    else:
        cols = None  # too big to keep: the backward recomputes it per chunk
        out = xp.empty((F, N, Ho, Wo), dtype=x.dtype, device=aac.device(x))
        for n0 in range(0, N, chunk):
            n1 = min(N, n0 + chunk)
            c = im2col(x[n0:n1, ...], HH, WW, stride, pad, Ho, Wo)
            o = w2 @ c
            del c
            o += bias
            out[:, n0:n1, ...] = xp.reshape(o, (F, n1 - n0, Ho, Wo))
    cache = (x, w, w2, cols, geom, chunk)
    return xp.permute_dims(out, (1, 0, 2, 3)), cache


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
    P = Ho * Wo

    dt = xp.permute_dims(dout, (1, 0, 2, 3))  # (F, N, Ho, Wo); free if dout kept the forward's layout
    dx = None
    if cols is not None:
        d2 = xp.reshape(dt, (F, N * P))
        db = xp.sum(d2, axis=1)
        dw2t = cols @ d2.mT  # (K, F); see the module docstring for the orientation
        if need_dx:
            dx = col2im(w2.mT @ d2, N, C, H, W, HH, WW, stride, pad, Ho, Wo)
    else:
        db = xp.sum(xp.reshape(dt, (F, N * P)), axis=1)
        dw2t = None
        if need_dx:
            dx = xp.empty((N, C, H, W), dtype=x.dtype, device=aac.device(x))
        for n0 in range(0, N, chunk):
            n1 = min(N, n0 + chunk)
            d2 = xp.reshape(dt[:, n0:n1, ...], (F, (n1 - n0) * P))
            c = im2col(x[n0:n1, ...], HH, WW, stride, pad, Ho, Wo)
            part = c @ d2.mT
            del c  # free the columns before the column gradient is allocated
            dw2t = part if dw2t is None else dw2t + part
            del part
            if need_dx:
                dx[n0:n1, ...] = col2im(w2.mT @ d2, n1 - n0, C, H, W, HH, WW, stride, pad, Ho, Wo)
    dw = xp.permute_dims(xp.reshape(dw2t, (HH, WW, C, F)), (3, 2, 0, 1))
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
