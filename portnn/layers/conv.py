"""Convolution layer (cross-correlation with zero padding, as torch's conv2d), written
once in the Array API: im2col and one matrix product per pass.

Contract
  Layout ("CN"). x (N, C, H, W) is copied once into its channel-major, zero-padded
  form x_padded_cm (C, N, H + 2*pad, W + 2*pad) (portnn._windows.pad_channel_major);
  its columns are ONE matrix cols (K, N*P) with K = HH*WW*C (kernel offset major,
  channel minor) and P = H'*W' (portnn._windows.im2col). With w_matrix (F, K), the
  filters in the same row order:
    forward   out2 (F, N*P) = w_matrix @ cols + b
  The output is returned as the (F, N) -> (N, F) transposed VIEW of out2 (no copy);
  relu and pool backward keep that layout, so the backward's transpose of dout is
  free again.

  Gradient algorithms. conv_forward decides once, from conv_param['grad_algorithm'],
  and records the choice in the cache (ConvCache.grad_algorithm); conv_backward
  dispatches on it:
    "columns"      (_grads_by_columns; any stride and pad)
                   dwᵀ (K, F) = cols @ d2ᵀ and dcols (K, N*P) = w_matrixᵀ @ d2,
                   dcols scattered back by col2im_add (slice-adds per kernel offset).
    "correlation"  (_grads_by_correlation; stride 1 and pad < HH, WW only)
                   both gradients from ONE im2col D of dout zero-padded by
                   (HH-1-pad, WW-1-pad): dx = flipped filters @ D, dw = D @ xᵀ with
                   the kernel offsets flipped back. The forward keeps no columns.
    "auto"         (default) "correlation" where it applies and F <= C (there D is
                   no larger than x's columns), else "columns" -- unless the backend
                   registered a whole-convolution kernel, "conv2d" (docs/design.md,
                   rule 2: NumPy with the optional extra portnn[onednn] registers
                   oneDNN's), and it applies to x and w: then forward and both
                   backward passes are the kernel's (ConvCache.kernel; recorded as
                   grad_algorithm "kernel"). Asking for "columns" or "correlation"
                   always runs this module's portable code, the kernel's reference.
  A backward with need_dx=False (dw and db only) always takes the columns path.
  Both algorithms compute the same gradients and agree to rounding, not bitwise.

  Memory. max_col_bytes (conv_param, default MAX_COL_BYTES = 32 MiB) and
  BLOCK_BYTES (16 MiB) are tuning knobs, not invariants or hard limits. When the
  whole batch's columns (K*N*P elements) fit in max_col_bytes they are built once
  and, for "columns", kept for the backward. Otherwise the batch runs in balanced
  blocks of images whose columns fit in min(max_col_bytes, BLOCK_BYTES) (at least
  one image per block) and the backward gathers each block's columns again. The
  backward always works in such blocks. dw is then a sum of per-block products,
  so a blocked run agrees with a one-block run to rounding.

Why this layout, this GEMM orientation, these block sizes and recomputing columns
rather than keeping them (measurements): docs/benchmarks.md, "Why the convolution
looks the way it does".
"""

from __future__ import annotations

from typing import Any, NamedTuple

import array_api_compat as aac

from .._checks import check_cache, check_float_array, check_int, check_is_array, check_keys, check_same_dtype
from .._windows import col2im_add, conv_output_size, im2col, pad_channel_major, put
from ..backends import namespace, primitives_of

__all__ = ["conv_forward", "conv_backward", "ConvCache", "MAX_COL_BYTES", "GRAD_ALGORITHMS", "CONV_PARAM_KEYS"]

#: Default bound on the im2col columns of one block, kept for the backward when
#: the whole batch fits in one block (32 MiB: glibc's largest mmap threshold).
MAX_COL_BYTES = 32 * 2**20

#: Block size when the batch does not fit in one block (columns recomputed).
BLOCK_BYTES = 16 * 2**20

#: Values of conv_param['grad_algorithm'] (module docstring).
GRAD_ALGORITHMS = ("auto", "columns", "correlation")

#: The keys conv_param may hold (any other, e.g. 'dilation', is a ValueError).
CONV_PARAM_KEYS = ("stride", "pad", "max_col_bytes", "grad_algorithm")


class ConvCache(NamedTuple):
    """What conv_backward needs from conv_forward (shapes as in conv_forward)."""

    x: Any  # (N, C, H, W): the forward's input
    x_padded_cm: Any  # (C, N, H + 2*pad, W + 2*pad): channel-major zero-padded x, im2col's source
    w: Any  # (F, C, HH, WW): the filters
    w_matrix: Any  # (F, HH*WW*C): the filters in im2col's row order
    cols: Any  # (HH*WW*C, N*H'*W'): x's columns, kept; None when recomputed per block
    stride: int
    pad: int
    out_h: int  # H'
    out_w: int  # W'
    images_per_block: int  # block size of the backward's column work
    max_col_bytes: int  # the forward's memory bound, reused by the correlation path
    grad_algorithm: str  # "columns", "correlation" or "kernel" ("auto" already resolved)
    kernel: Any = None  # the backend's "conv2d" kernel that ran the forward, else None


def conv_forward(x, w, b, conv_param=None):
    """Convolution (cross-correlation) with zero padding, as in torch's conv2d.

    Inputs
      x : (N, C, H, W) float32/float64
      w : (F, C, HH, WW), same dtype as x
      b : (F,), same dtype as x
      conv_param : dict
        'stride' : int >= 1 (default 1)
        'pad'    : int >= 0, zeros added on every side of H and W (default 0)
        'max_col_bytes' : int >= 1 (default MAX_COL_BYTES = 32 MiB). Tuning knob
            bounding the im2col columns (N*C*HH*WW*H'*W' * itemsize). Within it they
            are built once (and kept for a "columns" backward); above it the batch
            is processed in blocks of images (at most 16 MiB of columns, at least
            one image) and the backward gathers each block's columns again. Results
            agree with an unbounded run to rounding.
        'grad_algorithm' : "auto" (default), "columns" or "correlation" (else a
            ValueError): how conv_backward computes dx and dw, decided here and
            recorded in the cache. "columns": x's columns and col2im, any stride
            and pad. "correlation": one im2col of dout; needs stride 1 and
            pad < HH, WW (else a ValueError). "auto": "correlation" where it
            applies and F <= C, else "columns". A backward with need_dx=False
            always uses "columns". The two agree to rounding.
        Any other key (e.g. 'dilation', 'groups': portnn has neither) is a ValueError.
    Returns
      out   : (N, F, H', W'), x's dtype, H' = 1 + (H + 2*pad - HH) // stride
              (floor, like PyTorch), W' likewise
      cache : ConvCache, for conv_backward
    """
    xp = namespace(x, w, b)
    stride, pad, max_bytes, algorithm = _check_conv(xp, x, w, b, conv_param)
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho, Wo = conv_output_size(H, HH, stride, pad), conv_output_size(W, WW, stride, pad)
    kernel = primitives_of(xp).get("conv2d")
    if kernel is not None and (conv_param or {}).get("grad_algorithm", "auto") == "auto" and kernel.applies(x, w):
        out = kernel.forward(x, w, b, stride, pad)
        return out, ConvCache(x=x, x_padded_cm=None, w=w, w_matrix=None, cols=None, stride=stride, pad=pad,
                              out_h=Ho, out_w=Wo, images_per_block=N, max_col_bytes=max_bytes,
                              grad_algorithm="kernel", kernel=kernel)
    # (F, C, HH, WW) -> (F, HH*WW*C): the column row order of im2col.
    w2 = xp.reshape(xp.permute_dims(w, (0, 2, 3, 1)), (F, HH * WW * C))
    itemsize = xp.finfo(x.dtype).bits // 8
    per_image = C * HH * WW * Ho * Wo * itemsize
    bias = xp.reshape(b, (F, 1))
    xt = pad_channel_major(x, pad)  # (C, N, Hp, Wp), kept: the backward gathers from it

    # Blocks of images whose columns fit in min(max_col_bytes, BLOCK_BYTES): the
    # unit of every transient column buffer (module docstring, Memory).
    block = _chunk_images(N, per_image, min(max_bytes, BLOCK_BYTES))
    if N * per_image <= max_bytes:
        # The whole batch's columns fit: one GEMM, columns kept for the backward
        # unless its gradients will come from dout alone ("correlation").
        cols = im2col(xt, HH, WW, stride, Ho, Wo)
        out2 = w2 @ cols
        # `+=` on the product just made: in place on mutable arrays (no second (F, N*P)
        # buffer to fault in), a rebinding to a new array on JAX, which has no __iadd__;
        # nothing relies on aliasing either way (docs/design.md, rule 7).
        out2 += bias
        out = xp.reshape(out2, (F, N, Ho, Wo))
        if algorithm == "correlation":
            cols = None
    else:
        # Blocks of images; the backward gathers each block's columns again.
        cols = None
        out = _forward_by_blocks(xp, xt, w2, bias, block, HH, WW, stride, Ho, Wo)
    cache = ConvCache(x=x, x_padded_cm=xt, w=w, w_matrix=w2, cols=cols, stride=stride, pad=pad,
                      out_h=Ho, out_w=Wo, images_per_block=block, max_col_bytes=max_bytes,
                      grad_algorithm=algorithm)
    return xp.permute_dims(out, (1, 0, 2, 3)), cache


def conv_backward(dout, cache, need_dx=True):
    """Backward pass of conv_forward.

    Inputs
      dout  : (N, F, H', W'), the dtype of the forward's x
      cache : ConvCache from conv_forward; its grad_algorithm picks the algorithm
      need_dx : internal; models pass False for their first layer, whose input
                gradient nobody uses (it skips a GEMM and the col2im; dw then
                always comes from the columns path)
    Returns
      dx : (N, C, H, W), or None when need_dx is False
      dw : (F, C, HH, WW)
      db : (F,)
    """
    check_cache(cache, "conv_backward", ConvCache, "conv_forward")
    check_is_array(dout, "conv_backward: dout")
    x, w = cache.x, cache.w
    xp = namespace(dout, x)
    N, F = x.shape[0], w.shape[0]
    expected = (N, F, cache.out_h, cache.out_w)
    if tuple(dout.shape) != expected:
        raise ValueError(f"dout: expected shape {expected} (the forward's output), "
                         f"got {tuple(dout.shape)}")
    check_same_dtype("x", x, "dout", dout)
    if cache.kernel is not None:
        return cache.kernel.backward(dout, x, w, cache.stride, cache.pad, need_dx)
    if need_dx and cache.grad_algorithm == "correlation":
        return _grads_by_correlation(xp, dout, cache)
    return _grads_by_columns(xp, dout, cache, need_dx)


# -- the two gradient algorithms -------------------------------------------------


def _grads_by_columns(xp, dout, cache, need_dx):
    """dx (None unless need_dx), dw and db from x's columns, block by block.

    Per block of images: d2 (F, n*P) = dout's block, dwᵀ += cols @ d2ᵀ (K, F),
    and, for dx, col2im_add of w_matrixᵀ @ d2 into the channel-major padded
    gradient buffer (the adjoint of pad_channel_major), cropped at the end.
    Kept columns are sliced per block; otherwise each block's are gathered again.
    """
    x, xt, w2, cols = cache.x, cache.x_padded_cm, cache.w_matrix, cache.cols
    stride, pad, Ho, Wo, block = cache.stride, cache.pad, cache.out_h, cache.out_w, cache.images_per_block
    N, C, H, W = x.shape
    F, _, HH, WW = cache.w.shape
    P = Ho * Wo
    dt = xp.permute_dims(dout, (1, 0, 2, 3))  # (F, N, Ho, Wo); free if dout kept the forward's layout
    db = None
    dbuf = None
    if need_dx:  # channel-major padded gradient buffer: the adjoint of pad_channel_major
        dbuf = xp.zeros(tuple(xt.shape), dtype=x.dtype, device=aac.device(x))
    dw2t = None
    for n0 in range(0, N, block):
        n1 = min(N, n0 + block)
        d2 = xp.reshape(dt[:, n0:n1, ...], (F, (n1 - n0) * P))  # a copy unless dout is channel-major
        part = xp.sum(d2, axis=1)  # db per block: sums the contiguous d2, never dout's strided view
        db = part if db is None else db + part
        if cols is not None:  # kept: the block's column range (a view)
            c = cols[:, n0 * P:n1 * P]
        else:
            c = im2col(xt[:, n0:n1, ...], HH, WW, stride, Ho, Wo)
        # (K, F) orientation: the other one hits a slow BLAS path (docs/benchmarks.md).
        part = c @ d2.mT
        del c  # a recomputed block is freed before the block's column gradient is allocated
        dw2t = part if dw2t is None else dw2t + part
        del part
        if need_dx:
            dbuf = col2im_add(dbuf, w2.mT @ d2, n0, HH, WW, stride, Ho, Wo)
    if dw2t is None:  # empty batch: no block ran
        dw2t = xp.zeros((HH * WW * C, F), dtype=x.dtype, device=aac.device(x))
        db = xp.zeros((F,), dtype=x.dtype, device=aac.device(x))
    dx = None
    if need_dx:
        if pad:
            dbuf = dbuf[:, :, pad:pad + H, pad:pad + W]
        dx = xp.permute_dims(dbuf, (1, 0, 2, 3))  # (N, C, H, W) view of the channel-major buffer
    dw = xp.permute_dims(xp.reshape(dw2t, (HH, WW, C, F)), (3, 2, 0, 1))
    return dx, dw, db


def _grads_by_correlation(xp, dout, cache):
    """dx, dw and db of a stride-1 convolution from ONE im2col of the padded dout.

    With doutp = dout zero-padded by HH-1-pad rows and WW-1-pad columns (>= 0:
    pad < HH, WW) and its columns D[(i*WW + j)*F + f, (n, y, z)] = doutp[f, n, y+i, z+j]
    over the INPUT positions (y, z) < (H, W):
      dx[n, c, y, z]  = sum_{i,j,f} D[(i,j,f), (n,y,z)] * w[f, c, HH-1-i, WW-1-j]
                        (correlation with the flipped filters: wt2 (C, HH*WW*F) @ D)
      dw[f, c, a, b]  = sum_{n,y,z} D[(HH-1-a, WW-1-b, f), (n,y,z)] * x[n, c, y, z]
                        (D @ x_cmᵀ, x channel-major, then the offsets flipped back).
    One gather (a copy) per block replaces col2im's slice-ADDS (a read-modify-write
    of the gradient buffer per kernel offset) AND the recomputation of x's columns
    when they were not kept; both GEMMs run in their fast orientation. "auto" uses
    it when F <= C, where D is no larger than x's columns; for few input channels
    (an RGB first layer, F >> C) the column path is the cheaper (docs/benchmarks.md).
    """
    x, w, pad, max_bytes = cache.x, cache.w, cache.pad, cache.max_col_bytes
    N, F, Ho, Wo = dout.shape
    _, C, H, W = x.shape
    HH, WW = w.shape[2], w.shape[3]
    dev = aac.device(dout)
    # wt2[c, (i*WW + j)*F + f] = w[f, c, HH-1-i, WW-1-j]: im2col's row order (offset, channel).
    wt2 = xp.reshape(xp.permute_dims(xp.flip(w, axis=(2, 3)), (1, 2, 3, 0)), (C, HH * WW * F))
    dp = pad_channel_major(dout, HH - 1 - pad, WW - 1 - pad)  # (F, N, H + HH - 1, W + WW - 1)
    xcm = xp.permute_dims(x, (1, 0, 2, 3))  # (C, N, H, W) view
    itemsize = xp.finfo(dout.dtype).bits // 8
    block = _chunk_images(N, F * HH * WW * H * W * itemsize, min(max_bytes, BLOCK_BYTES))
    dxt = xp.empty((C, N, H, W), dtype=dout.dtype, device=dev)
    g = None  # (HH*WW*F, C), rows (i, j, f) with i = HH-1-a, j = WW-1-b
    for n0 in range(0, N, block):
        n1 = min(N, n0 + block)
        d = im2col(dp[:, n0:n1, ...], HH, WW, 1, H, W)  # (HH*WW*F, n*H*W)
        dxt = put(dxt, (slice(None), slice(n0, n1), Ellipsis), xp.reshape(wt2 @ d, (C, n1 - n0, H, W)))
        part = d @ xp.reshape(xcm[:, n0:n1, ...], (C, (n1 - n0) * H * W)).mT
        del d
        g = part if g is None else g + part
    if g is None:  # empty batch
        g = xp.zeros((HH * WW * F, C), dtype=dout.dtype, device=dev)
    dw = xp.permute_dims(xp.flip(xp.reshape(g, (HH, WW, F, C)), axis=(0, 1)), (2, 3, 0, 1))
    return xp.permute_dims(dxt, (1, 0, 2, 3)), dw, xp.sum(dout, axis=(0, 2, 3))


# -- helpers -------------------------------------------------------------------


def _forward_by_blocks(xp, xt, w2, bias, block, HH, WW, stride, Ho, Wo):
    """out (F, N, Ho, Wo) = the forward GEMM, one block of ``block`` images at a time
    (one block's columns in flight; the backward gathers them again)."""
    F, N = w2.shape[0], xt.shape[1]
    out = xp.empty((F, N, Ho, Wo), dtype=xt.dtype, device=aac.device(xt))
    for n0 in range(0, N, block):
        n1 = min(N, n0 + block)
        c = im2col(xt[:, n0:n1, ...], HH, WW, stride, Ho, Wo)
        o = w2 @ c
        del c  # the next block's columns reuse this memory
        o += bias  # as above: in place where allowed, rebound on JAX
        out = put(out, (slice(None), slice(n0, n1), Ellipsis), xp.reshape(o, (F, n1 - n0, Ho, Wo)))
    return out


def _grad_algorithm(conv_param, stride, pad, wshape, channels) -> str:
    """conv_param['grad_algorithm'] checked and resolved: "columns" or "correlation"."""
    name = "conv_param['grad_algorithm']"
    value = conv_param.get("grad_algorithm", "auto")
    if not isinstance(value, str) or value not in GRAD_ALGORITHMS:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, GRAD_ALGORITHMS))}, got {value!r}")
    F, _, HH, WW = wshape
    applies = stride == 1 and pad < HH and pad < WW
    if value == "correlation" and not applies:
        raise ValueError(
            f"{name}: expected 'columns' or 'auto' for stride {stride}, pad {pad} and a "
            f"{HH}x{WW} kernel ('correlation' needs stride 1 and pad < the kernel size), "
            f"got 'correlation'"
        )
    if value == "auto":
        return "correlation" if applies and F <= channels else "columns"
    return value


def _chunk_images(n: int, col_bytes_per_image: int, max_bytes: int) -> int:
    """Images per block so that a block's columns fit in max_bytes (at least 1, and
    1 for an empty batch), balanced: the fewest blocks that fit, of equal size up
    to one image (no small last block with a short, inefficient GEMM)."""
    if n == 0:
        return 1  # range(0, 0, 1): no block runs
    most = max(1, min(n, max_bytes // max(1, col_bytes_per_image)))
    blocks = -(-n // most)
    return -(-n // blocks)


def _check_conv(xp, x, w, b, conv_param):
    if conv_param is None:
        conv_param = {}
    if not isinstance(conv_param, dict):
        raise TypeError(f"conv_param: expected a dict with 'stride' and 'pad', got {type(conv_param).__name__}")
    check_keys(conv_param, "conv_param", CONV_PARAM_KEYS)
    check_float_array(xp, x, "x", ndim=4, layout="(N, C, H, W)")
    check_float_array(xp, w, "w", ndim=4, layout="(F, C, HH, WW)")
    check_float_array(xp, b, "b", ndim=1, layout="(F,)")
    check_same_dtype("x", x, "w", w)
    check_same_dtype("x", x, "b", b)
    N, C, H, W = x.shape
    F, Cw, HH, WW = w.shape
    if Cw != C:
        raise ValueError(f"w: expected {C} input channels (x has shape {tuple(x.shape)}), "
                         f"got w of shape {tuple(w.shape)}")
    if tuple(b.shape) != (F,):
        raise ValueError(f"b: expected shape ({F},) (one bias per filter of w), got {tuple(b.shape)}")
    stride = check_int(conv_param.get("stride", 1), "conv_param['stride']", minimum=1)
    pad = check_int(conv_param.get("pad", 0), "conv_param['pad']", minimum=0)
    max_bytes = check_int(conv_param.get("max_col_bytes", MAX_COL_BYTES), "conv_param['max_col_bytes']", minimum=1)
    if HH < 1 or WW < 1 or F < 1:
        raise ValueError(f"w: expected a non-empty filter bank, got shape {tuple(w.shape)}")
    if HH > H + 2 * pad or WW > W + 2 * pad:
        raise ValueError(
            f"w: kernel {HH}x{WW} is larger than the padded input {H + 2 * pad}x{W + 2 * pad} "
            f"(x spatial size {H}x{W}, pad {pad})"
        )
    algorithm = _grad_algorithm(conv_param, stride, pad, w.shape, C)
    return stride, pad, max_bytes, algorithm
