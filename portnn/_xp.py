"""The few neural-network primitives the Array API standard lacks, written once in
standard operations (no scatter, no as_strided, no einsum).

Every function takes arrays and infers their namespace; creation calls pass
dtype= and device= explicitly so results stay on the inputs' device.
"""

from __future__ import annotations

import array_api_compat as aac

from .backends import namespace


def one_hot(y, num_classes: int, dtype):
    """Integer labels y (N,) -> (N, num_classes) array of 0/1 in ``dtype``.

    Built by comparison with an arange (strict mode forbids integer-array
    __setitem__, so ``out[arange(N), y] = 1`` is not portable).
    """
    xp = namespace(y)
    classes = xp.arange(num_classes, dtype=y.dtype, device=aac.device(y))
    return xp.astype(y[:, None] == classes[None, :], dtype)


# --------------------------------------------------------------------------
# Sliding-window primitives for convolution and pooling.
#
# The standard has no pad, as_strided or scatter-add, so every window operation
# is a short Python loop over the kh*kw KERNEL OFFSETS (never over elements):
# offset (i, j) selects, with one strided slice, the element at that position of
# every window at once. Gathers stack those slices; scatters slice-add into them
# (targets within one slice are distinct, overlapping windows accumulate across
# iterations), so duplicates never meet in one write.
# --------------------------------------------------------------------------


def conv_output_size(size: int, kernel: int, stride: int, pad: int = 0) -> int:
    """Number of window positions along one axis: 1 + (size + 2*pad - kernel) // stride."""
    return 1 + (size + 2 * pad - kernel) // stride


def window_slice(offset: int, stride: int, count: int) -> slice:
    """Slice picking ``offset + stride*t`` for t = 0..count-1 (offset's element of every window)."""
    return slice(offset, offset + stride * (count - 1) + 1, stride)


def pad2d(x, pad: int):
    """Zero-pad the last two axes on both sides.

    x (N, C, H, W) -> (N, C, H + 2*pad, W + 2*pad), same dtype and device;
    pad == 0 returns x itself (no copy).
    """
    if pad == 0:
        return x
    xp = namespace(x)
    N, C, H, W = x.shape
    out = xp.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=x.dtype, device=aac.device(x))
    out[:, :, pad:pad + H, pad:pad + W] = x
    return out


def im2col(xpad, kh: int, kw: int, stride: int, out_h: int, out_w: int):
    """Gather every kh x kw window of a (padded) image batch into columns.

    xpad (N, C, Hp, Wp) -> cols (N, kh*kw*C, out_h*out_w), contiguous, where
    cols[n, (i*kw + j)*C + c, r*out_w + s] = xpad[n, c, r*stride + i, s*stride + j].
    One strided slice per kernel offset, one xp.stack.
    """
    xp = namespace(xpad)
    N, C = xpad.shape[0], xpad.shape[1]
    rows = [window_slice(i, stride, out_h) for i in range(kh)]
    cols_ = [window_slice(j, stride, out_w) for j in range(kw)]
    patches = xp.stack([xpad[:, :, r, c] for r in rows for c in cols_], axis=1)  # (N, kh*kw, C, oh, ow)
    return xp.reshape(patches, (N, kh * kw * C, out_h * out_w))


def col2im(cols, channels: int, height: int, width: int, kh: int, kw: int, stride: int,
           out_h: int, out_w: int):
    """Adjoint of im2col: sum each column entry back onto the pixel it came from.

    cols (N, kh*kw*C, out_h*out_w) -> (N, C, height, width) (the padded size
    Hp, Wp that im2col read), overlapping windows accumulated. One slice-add per
    kernel offset, in offset order (so the result is deterministic).
    """
    xp = namespace(cols)
    N = cols.shape[0]
    parts = xp.reshape(cols, (N, kh * kw, channels, out_h, out_w))
    out = xp.zeros((N, channels, height, width), dtype=cols.dtype, device=aac.device(cols))
    k = 0
    for i in range(kh):
        r = window_slice(i, stride, out_h)
        for j in range(kw):
            c = window_slice(j, stride, out_w)
            out[:, :, r, c] += parts[:, k, ...]
            k += 1
    return out


def window_argmax_dtype(xp, window_size: int):
    """Smallest signed integer dtype that holds offsets 0..window_size-1."""
    return xp.int8 if window_size <= 127 else (xp.int16 if window_size <= 32767 else xp.int32)


def window_max(x, kh: int, kw: int, stride: int, out_h: int, out_w: int):
    """Max over each kh x kw window and the offset of its FIRST maximum.

    x (N, C, H, W) -> out (N, C, out_h, out_w) in x's dtype and
    arg (N, C, out_h, out_w) small integer (window_argmax_dtype), where arg is
    the row-major offset i*kw + j of the first element equal to the window max.
    A running max over the offset slices: an offset wins only if STRICTLY larger,
    so ties keep the earliest offset (the torch / CS231n rule). NaN propagates
    into ``out`` (xp.maximum) like torch's max_pool2d.
    """
    xp = namespace(x)
    N, C = x.shape[0], x.shape[1]
    rows = [window_slice(i, stride, out_h) for i in range(kh)]
    cols_ = [window_slice(j, stride, out_w) for j in range(kw)]
    out = x[:, :, rows[0], cols_[0]]
    arg = xp.zeros((N, C, out_h, out_w), dtype=window_argmax_dtype(xp, kh * kw),
                   device=aac.device(x))
    for k in range(1, kh * kw):
        v = x[:, :, rows[k // kw], cols_[k % kw]]
        arg = xp.where(v > out, k, arg)
        out = xp.maximum(out, v)
    if kh * kw == 1:
        out = out + 0.0  # a fresh array, never a view of the caller's x
    return out, arg


def window_max_grad(dout, arg, kh: int, kw: int, stride: int, height: int, width: int):
    """Route each window's gradient to its first maximum (generic: any stride, overlap).

    dout (N, C, out_h, out_w), arg as from window_max -> dx (N, C, height, width)
    in dout's dtype. One slice-add of ``dout * (arg == k)`` per kernel offset k,
    so overlapping windows accumulate and exactly one element per window receives
    its gradient.
    """
    xp = namespace(dout, arg)
    N, C, out_h, out_w = dout.shape
    dx = xp.zeros((N, C, height, width), dtype=dout.dtype, device=aac.device(dout))
    k = 0
    for i in range(kh):
        r = window_slice(i, stride, out_h)
        for j in range(kw):
            c = window_slice(j, stride, out_w)
            dx[:, :, r, c] += dout * xp.astype(arg == k, dout.dtype)
            k += 1
    return dx


def window_max_grad_adjacent(dout, arg, k: int, height: int, width: int):
    """window_max_grad for k x k windows with stride k (adjacent, non-overlapping).

    Same values as the generic version (each input element lies in at most one
    window, so no accumulation is needed): every offset's masked gradient is
    written ONCE into a (N, C, out_h, k, out_w, k) buffer whose reshape is the
    image, instead of strided read-modify-writes. Rows/columns past the last
    window (height > out_h*k) get zeros.
    dout (N, C, out_h, out_w), arg (N, C, out_h, out_w) -> dx (N, C, height, width).
    """
    xp = namespace(dout, arg)
    N, C, out_h, out_w = dout.shape
    dev = aac.device(dout)
    buf = xp.empty((N, C, out_h, k, out_w, k), dtype=dout.dtype, device=dev)
    for i in range(k):
        for j in range(k):
            buf[:, :, :, i, :, j] = dout * xp.astype(arg == i * k + j, dout.dtype)
    tiled = xp.reshape(buf, (N, C, out_h * k, out_w * k))
    if height == out_h * k and width == out_w * k:
        return tiled
    dx = xp.zeros((N, C, height, width), dtype=dout.dtype, device=dev)
    dx[:, :, :out_h * k, :out_w * k] = tiled
    return dx
