"""Convolution layer: im2col + one matrix product per pass, written once in the Array API.

Layout ("CN"): the column matrix is (K, N*P) with K = HH*WW*C (kernel offset
major, channel minor) and P = H'*W' (portnn._xp.im2col). Each pass is then ONE
big GEMM with contiguous operands:
  forward   out2 (F, N*P) = w2 (F, K) @ cols (K, N*P)
  backward  dw2ᵀ (K, F)   = cols (K, N*P) @ d2ᵀ (N*P, F)
            dcols (K, N*P) = w2ᵀ (K, F) @ d2 (F, N*P), then col2im by slice-adds;
            for stride 1 with F <= C instead both gradients come from one im2col of
            the padded dout: dx = flipped filters @ D, dw = D @ xᵀ
            (_grads_by_correlation: a gather instead of adds, no recomputation).
The output is returned as the (F, N) -> (N, F) transposed VIEW of out2 (no
copy); the backward's ``permute_dims(dout, (1, 0, 2, 3))`` of a gradient that
kept that layout (relu/pool backward preserve it) is free again.

Why this layout (measured on the benchmark shapes, benchmarks/, 2 threads):
the previous per-image layout (N, K, P) issued one small GEMM per image and
pass (150 BLAS calls for a 50-image conv), and multi-threaded OpenBLAS pays a
thread wake-up per call; one GEMM per pass was 1.3-2x faster end to end. dw is
computed as (cols @ d2ᵀ)ᵀ because the other orientation, a (F, N*P) @ (N*P, K)
product with a long reduction, hits a 100x OpenBLAS slow path on 2 threads.

Memory: the column buffer holds K*N*P elements. When that fits in
``max_col_bytes`` (default 32 MiB) the whole batch is one block whose columns
are kept for the backward. Otherwise the batch is processed in blocks of
images whose columns fit in min(max_col_bytes, BLOCK_BYTES = 16 MiB), and the
backward gathers each block's columns again instead of keeping them. The
backward always works in such blocks (the column gradient too, and a kept
column matrix is sliced per block). dw is then a sum of per-block products, so
a blocked run agrees with a one-block run to rounding (not bitwise).

Why recompute rather than keep (measured, benchmarks/): a buffer allocated
fresh every step costs the kernel a page fault per 4 KiB page (zeroing it,
and on these VMs more). glibc serves allocations above its mmap threshold
(at most 32 MiB) with fresh pages every time, and returns a freed heap top
above its trim threshold to the kernel; keeping 40 MB of columns (W3) faulted
in 21-36 MiB per step, 20-30 ms of system time, while gathering them again
costs ~5 ms. One block of at most 32 MiB in flight at a time is recycled by
malloc from step to step (0 faults per step on W3, measured with getrusage).
"""

from __future__ import annotations

import array_api_compat as aac

from .._checks import check_float_array, check_int, check_same_dtype
from .._xp import col2im_add, conv_output_size, im2col, pad_channel_major
from ..backends import namespace

__all__ = ["conv_forward", "conv_backward", "MAX_COL_BYTES"]

#: Default bound on the im2col columns of one block, kept for the backward when
#: the whole batch fits in one block (32 MiB: glibc's largest mmap threshold).
MAX_COL_BYTES = 32 * 2**20

#: Block size when the batch does not fit in one block (columns recomputed).
BLOCK_BYTES = 16 * 2**20

#: Gradients of stride-1 layers with F <= C from one gather of dout
#: (_grads_by_correlation); the tests run both algorithms.
BY_CORRELATION = True


def conv_forward(x, w, b, conv_param=None):
    """Convolution (cross-correlation) with zero padding, as in torch's conv2d.

    Inputs
      x : (N, C, H, W) float32/float64
      w : (F, C, HH, WW), same dtype as x
      b : (F,), same dtype as x
      conv_param : dict
        'stride' : int >= 1 (default 1)
        'pad'    : int >= 0, zeros added on every side of H and W (default 0)
        'max_col_bytes' : int >= 1 (default MAX_COL_BYTES = 32 MiB). Memory bound
            on the im2col columns (N*C*HH*WW*H'*W' * itemsize). Within it they are
            built once and kept for the backward; above it the batch is processed
            in blocks of images (at most 16 MiB of columns, at least one image)
            and the backward gathers each block's columns again. Results agree
            with an unbounded run to rounding.
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
    per_image = C * HH * WW * Ho * Wo * itemsize
    bias = xp.reshape(b, (F, 1))
    xt = pad_channel_major(x, pad)  # (C, N, Hp, Wp), kept: the backward gathers from it

    # Blocks of images whose columns fit in min(max_col_bytes, BLOCK_BYTES): the
    # unit of every transient column buffer (module docstring: page faults).
    block = _chunk_images(N, per_image, min(max_bytes, BLOCK_BYTES))
    if N * per_image <= max_bytes:
        # The whole batch's columns fit: one GEMM, columns kept for the backward
        # unless its input gradient will come from dout alone (_by_correlation).
        cols = im2col(xt, HH, WW, stride, Ho, Wo)
        out2 = w2 @ cols
        out2 += bias
        out = xp.reshape(out2, (F, N, Ho, Wo))
        if _by_correlation(stride, pad, w.shape, C):
            cols = None
    else:
        # Blocks of images; the backward gathers each block's columns again
        # (cheaper than faulting in fresh pages to keep them: module docstring).
        cols = None
        out = xp.empty((F, N, Ho, Wo), dtype=x.dtype, device=aac.device(x))
        for n0 in range(0, N, block):
            n1 = min(N, n0 + block)
            c = im2col(xt[:, n0:n1, ...], HH, WW, stride, Ho, Wo)
            o = w2 @ c
            del c  # the next block's columns reuse this memory
            o += bias
            out[:, n0:n1, ...] = xp.reshape(o, (F, n1 - n0, Ho, Wo))
    cache = (x, xt, w, w2, cols, geom, block, max_bytes)
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
    x, xt, w, w2, cols, (stride, pad, Ho, Wo), block, max_bytes = cache
    xp = namespace(dout, x)
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    if tuple(dout.shape) != (N, F, Ho, Wo):
        raise ValueError(f"dout: expected shape {(N, F, Ho, Wo)} (the forward's output), "
                         f"got {tuple(dout.shape)}")
    check_same_dtype("x", x, "dout", dout)
    P = Ho * Wo

    if need_dx and _by_correlation(stride, pad, w.shape, C):
        # Both gradients from ONE gather of dout (see _grads_by_correlation).
        dx, dw = _grads_by_correlation(xp, dout, x, w, pad, max_bytes)
        return dx, dw, xp.sum(dout, axis=(0, 2, 3))

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
        part = c @ d2.mT  # (K, F); see the module docstring for the orientation
        del c  # a recomputed block is freed before the block's column gradient is allocated
        dw2t = part if dw2t is None else dw2t + part
        del part
        if need_dx:
            col2im_add(dbuf, w2.mT @ d2, n0, HH, WW, stride, Ho, Wo)
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


# -- helpers -------------------------------------------------------------------


def _by_correlation(stride, pad, wshape, channels) -> bool:
    """Whether the backward (with dx) takes both gradients from dout's columns."""
    F, _, HH, WW = wshape
    return BY_CORRELATION and stride == 1 and F <= channels and pad < HH and pad < WW


def _grads_by_correlation(xp, dout, x, w, pad, max_bytes):
    """dx and dw of a stride-1 convolution from ONE im2col of the padded dout.

    With doutp = dout zero-padded by HH-1-pad rows and WW-1-pad columns (>= 0:
    pad < HH, WW) and its columns D[(i*WW + j)*F + f, (n, y, z)] = doutp[f, n, y+i, z+j]
    over the INPUT positions (y, z) < (H, W):
      dx[n, c, y, z]  = sum_{i,j,f} D[(i,j,f), (n,y,z)] * w[f, c, HH-1-i, WW-1-j]
                        (correlation with the flipped filters: wt2 (C, HH*WW*F) @ D)
      dw[f, c, a, b]  = sum_{n,y,z} D[(HH-1-a, WW-1-b, f), (n,y,z)] * x[n, c, y, z]
                        (D @ x_cmᵀ, x channel-major, then the offsets flipped back).
    One gather (a copy) per block replaces col2im's slice-ADDS (a read-modify-write
    of the gradient buffer per kernel offset) AND the recomputation of x's columns
    when they were not kept; both GEMMs run in their fast orientation. Used when
    F <= C, where D is no larger than x's columns; for few input channels (an RGB
    first layer, F >> C) the column path is the cheaper. Measured on W3 (64 -> 64
    channels, 3x3): benchmarks/, docs/benchmarks.md.
    """
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
        dxt[:, n0:n1, ...] = xp.reshape(wt2 @ d, (C, n1 - n0, H, W))
        part = d @ xp.reshape(xcm[:, n0:n1, ...], (C, (n1 - n0) * H * W)).mT
        del d
        g = part if g is None else g + part
    if g is None:  # empty batch
        g = xp.zeros((HH * WW * F, C), dtype=dout.dtype, device=dev)
    dw = xp.permute_dims(xp.flip(xp.reshape(g, (HH, WW, F, C)), axis=(0, 1)), (2, 3, 0, 1))
    return xp.permute_dims(dxt, (1, 0, 2, 3)), dw


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
    return stride, pad, max_bytes
