"""Sliding-window primitives for convolution and pooling, written once in
standard Array API operations (no pad, as_strided, scatter-add or einsum).

Every function takes arrays and infers their namespace; creation calls pass
dtype= and device= explicitly so results stay on the inputs' device
(docs/design.md, rules 1 and 3).

The standard has no pad, as_strided or scatter-add, so every window operation
is a short Python loop over the kh*kw KERNEL OFFSETS (never over elements):
offset (i, j) selects, with one strided slice, the element at that position of
every window at once. Gathers stack those slices; scatters slice-add into them
(targets within one slice are distinct, overlapping windows accumulate across
iterations), so duplicates never meet in one write.

| function            | used by | what                                                      |
|---------------------|---------|-----------------------------------------------------------|
| conv_output_size    | both    | number of window positions along one axis                 |
| window_slice        | both    | the slice holding one offset's element of every window    |
| pad_channel_major   | conv    | (N, C, H, W) -> zero-padded channel-major (C, N, Hp, Wp)  |
| im2col              | conv    | (C, n, Hp, Wp) -> columns (kh*kw*C, n*out_h*out_w)        |
| col2im_add          | conv    | adjoint of im2col, added into a (C, N, Hp, Wp) buffer     |
| window_max          | pool    | (N, C, H, W) -> max, first-max offset (N, C, oh, ow)      |
| window_max_grad     | pool    | adjoint of window_max -> dx (N, C, H, W)                  |
| window_argmax_dtype | pool    | smallest signed integer dtype holding the window offsets  |
| window_mean         | pool    | (N, C, H, W) -> mean of each window (N, C, oh, ow)        |
| window_mean_grad    | pool    | adjoint of window_mean -> dx (N, C, H, W)                 |
| put, add_at         | both    | write into a buffer just created, on mutable or immutable arrays |

Writes (docs/design.md, rule 7): every function writes only into buffers it has just
created, and through ``put`` / ``add_at``, which write in place where the array
library allows it (NumPy, CuPy, torch, strict: no copy, no extra pass) and return a
new array where it does not (JAX, whose jit turns the chain of updates back into
in-place writes). Callers always use the returned array.
"""

from __future__ import annotations

import functools

import array_api_compat as aac
import array_api_extra as xpx

from .backends import namespace, primitives_of

__all__ = [
    "conv_output_size", "window_slice", "pad_channel_major", "im2col", "col2im_add",
    "window_argmax_dtype", "window_max", "window_max_grad", "put", "add_at",
    "window_mean", "window_mean_grad",
]


def registered_primitive(fn):
    """Let a backend replace primitive ``fn`` (docs/design.md, rule 2).

    The call goes to the function the backend of the first argument registered
    under ``fn``'s name (``portnn.backends.primitives_of``; JAX registers im2col,
    col2im_add and window_max_grad), else to ``fn`` itself, the portable version,
    which stays reachable as ``.reference`` for the tests that compare the two.
    """
    name = fn.__name__

    @functools.wraps(fn)
    def dispatch(first, *args):
        return primitives_of(namespace(first)).get(name, fn)(first, *args)

    dispatch.reference = fn
    return dispatch


def put(buf, idx, value):
    """``buf[idx] = value`` for a buffer the caller has just created; returns the
    updated buffer (``buf`` itself on mutable arrays, a new array on immutable ones)."""
    if aac.is_writeable_array(buf):
        buf[idx] = value
        return buf
    return xpx.at(buf, idx).set(value)


def add_at(buf, idx, value):
    """``buf[idx] += value`` (``idx`` a basic index: its targets are distinct) for a
    buffer the caller has just created; returns the updated buffer."""
    if aac.is_writeable_array(buf):
        buf[idx] += value
        return buf
    return xpx.at(buf, idx).add(value)


def conv_output_size(size: int, kernel: int, stride: int, pad: int = 0) -> int:
    """Number of window positions along one axis: 1 + (size + 2*pad - kernel) // stride."""
    return 1 + (size + 2 * pad - kernel) // stride


def window_slice(offset: int, stride: int, count: int) -> slice:
    """Slice picking ``offset + stride*t`` for t = 0..count-1 (offset's element of every window)."""
    return slice(offset, offset + stride * (count - 1) + 1, stride)


def pad_channel_major(x, pad: int, pad_w: int | None = None):
    """x (N, C, H, W) -> (C, N, H + 2*pad, W + 2*pad_w): the channel-major, zero-padded
    copy that im2col reads (padding and the (N, C) -> (C, N) transpose in one pass).
    pad_w defaults to pad.

    No padding returns the transposed VIEW of x (im2col copies anyway).
    """
    xp = namespace(x)
    N, C, H, W = x.shape
    pad_w = pad if pad_w is None else pad_w
    xt = xp.permute_dims(x, (1, 0, 2, 3))
    if pad == 0 and pad_w == 0:
        return xt
    buf = xp.zeros((C, N, H + 2 * pad, W + 2 * pad_w), dtype=x.dtype, device=aac.device(x))
    return put(buf, (slice(None), slice(None), slice(pad, pad + H), slice(pad_w, pad_w + W)), xt)


@registered_primitive
def im2col(xt, kh: int, kw: int, stride: int, out_h: int, out_w: int):
    """Gather every kh x kw window of a channel-major padded batch into ONE column matrix.

    xt (C, n, Hp, Wp) (from pad_channel_major, or a batch slice of it)
    -> cols (kh*kw*C, n*out_h*out_w), contiguous, where
    cols[(i*kw + j)*C + c, (m*out_h + r)*out_w + s] = xt[c, m, r*stride + i, s*stride + j].

    Layout "CN" (channel-major, batch inside the columns): the convolution is then
    one big GEMM per pass, whose operands are contiguous. Each kernel offset is
    one strided slice of xt, and one xp.stack writes the columns.
    """
    xp = namespace(xt)
    C, n = xt.shape[0], xt.shape[1]
    rows = [window_slice(i, stride, out_h) for i in range(kh)]
    cols_ = [window_slice(j, stride, out_w) for j in range(kw)]
    # One concat of the 4-D offset slices along the channel axis: the same memory as
    # stacking them into (kh*kw, C, n, oh, ow); torch's CUDA cat copies inputs of more
    # than four dimensions one launch each (49 for a 7x7 filter), 4-D ones in one batch.
    patches = xp.concat([xt[:, :, r, c] for r in rows for c in cols_], axis=0)  # (kh*kw*C, n, oh, ow)
    return xp.reshape(patches, (kh * kw * C, n * out_h * out_w))


@registered_primitive
def col2im_add(buf, cols, n0: int, kh: int, kw: int, stride: int, out_h: int, out_w: int):
    """Adjoint of im2col: add each column entry onto the padded pixel it came from.

    buf (C, N, Hp, Wp): channel-major padded gradient buffer (zeros to start), which
    the caller has just created; returns the updated buffer (use it: on immutable
    arrays it is a new one);
    cols (kh*kw*C, n*out_h*out_w) are the columns of images n0 .. n0+n-1, whose
    contributions are added into buf[:, n0:n0+n]. Overlapping windows accumulate:
    one slice-add per kernel offset, in offset order (deterministic). Calling it
    block by block keeps each block's buffer rows in cache while they are summed.
    """
    xp = namespace(buf, cols)
    C = buf.shape[0]
    n = cols.shape[1] // (out_h * out_w)
    parts = xp.reshape(cols, (kh * kw, C, n, out_h, out_w))
    batch = slice(n0, n0 + n)
    k = 0
    for i in range(kh):
        r = window_slice(i, stride, out_h)
        for j in range(kw):
            buf = add_at(buf, (slice(None), batch, r, window_slice(j, stride, out_w)), parts[k, ...])
            k += 1
    return buf


def window_argmax_dtype(xp, window_size: int):
    """Smallest signed integer dtype that holds offsets 0..window_size-1."""
    return xp.int8 if window_size <= 127 else (xp.int16 if window_size <= 32767 else xp.int32)


# Pooling windows are read through a "phase split" of the input: for stride s, the
# s x s sub-images x[:, :, a::s, b::s] are copied once into one buffer
# phases[a, b] (N, C, Hh, Wh). Window offset (i, j) then reads the row-contiguous
# block phases[i % s, j % s, :, :, i//s : i//s + out_h, j//s : j//s + out_w] instead
# of a stride-s slice of x, so every elementwise pass runs on unit-stride rows
# (several times faster than on strided views). For windows that tile the input
# (kernel == stride) this is the classic reshape-to-(N, C, H/k, k, W/k, k) trick.
# Stride 1 needs no copy: the phase is x itself.


def _phase_geometry(kh, kw, stride, out_h, out_w):
    pa, pb = min(stride, kh), min(stride, kw)  # phases a window offset can fall on
    hh, wh = out_h + (kh - 1) // stride, out_w + (kw - 1) // stride  # rows/cols per phase read
    return pa, pb, hh, wh


def _phase_rows(height, a, stride, hh):
    """Rows of phase a that exist in the input (a + stride*t < height), at most hh."""
    return min(hh, max(0, -(-(height - a) // stride)))


def _phases(x, kh, kw, stride, out_h, out_w):
    """x (N, C, H, W) -> phases (pa, pb, N, C, hh, wh) (see above); a view when stride == 1."""
    xp = namespace(x)
    N, C, H, W = x.shape
    if stride == 1:
        return xp.reshape(x, (1, 1, N, C, H, W))
    pa, pb, hh, wh = _phase_geometry(kh, kw, stride, out_h, out_w)
    buf = xp.empty((pa, pb, N, C, hh, wh), dtype=x.dtype, device=aac.device(x))
    # Cells past the input's edge are never read by a window, so they may stay uninitialised.
    for a in range(pa):
        na = _phase_rows(H, a, stride, hh)
        for b in range(pb):
            nb = _phase_rows(W, b, stride, wh)
            buf = put(buf, (a, b, slice(None), slice(None), slice(0, na), slice(0, nb)),
                      x[:, :, a:a + stride * (na - 1) + 1:stride, b:b + stride * (nb - 1) + 1:stride])
    return buf


def _offset_block(stride, i, j, out_h, out_w):
    """Index of window offset (i, j) in the phase buffer."""
    a, b = (0, 0) if stride == 1 else (i % stride, j % stride)
    si, sj = (i, j) if stride == 1 else (i // stride, j // stride)
    return a, b, slice(si, si + out_h), slice(sj, sj + out_w)


@registered_primitive
def window_max(x, kh: int, kw: int, stride: int, out_h: int, out_w: int):
    """Max over each kh x kw window and the offset of its FIRST maximum.

    x (N, C, H, W) -> out (N, C, out_h, out_w) in x's dtype and
    arg (N, C, out_h, out_w) small integer (window_argmax_dtype), where arg is
    the row-major offset i*kw + j of the first element equal to the window max.
    A running max over the window offsets: an offset wins only if STRICTLY larger,
    so ties keep the earliest offset (the torch / CS231n rule). NaN propagates
    into ``out`` (xp.maximum) like torch's max_pool2d.
    """
    xp = namespace(x)
    N, C = x.shape[0], x.shape[1]
    ph = _phases(x, kh, kw, stride, out_h, out_w)
    a, b, r, c = _offset_block(stride, 0, 0, out_h, out_w)
    out = ph[a, b, :, :, r, c]
    adt = window_argmax_dtype(xp, kh * kw)
    arg = xp.zeros((N, C, out_h, out_w), dtype=adt, device=aac.device(x))
    for k in range(1, kh * kw):
        a, b, r, c = _offset_block(stride, k // kw, k % kw, out_h, out_w)
        v = ph[a, b, :, :, r, c]
        # One operation (a kernel on a GPU) instead of maximum(arg, astype(v > out) * k)'s
        # three; NumPy, where xp.where is the slower of the two, runs its own registered
        # version (backends/numpy_primitives.py).
        arg = xp.where(v > out, k, arg)
        out = xp.maximum(out, v)
    if kh * kw == 1:
        out = out + 0.0  # a fresh array, never a view of the caller's x
    return out, arg


@registered_primitive
def window_max_grad(dout, arg, kh: int, kw: int, stride: int, height: int, width: int):
    """Route each window's gradient to its first maximum (any window, stride, overlap).

    dout (N, C, out_h, out_w), arg as from window_max -> dx (N, C, height, width)
    in dout's dtype. For each kernel offset k, ``dout * (arg == k)`` goes to the
    elements at offset k of every window. Windows that do not overlap (kernel <=
    stride, e.g. 2x2 stride 2) write it once, straight into the strided view of
    dx (no accumulation). Overlapping windows (3x3 stride 2) add it into that
    offset's row-contiguous block of a phase-split buffer, scattered back to the
    image by one strided copy per phase. Each input element receives the
    gradient of every window whose first maximum it is.
    """
    xp = namespace(dout, arg)
    N, C, out_h, out_w = dout.shape
    dev = aac.device(dout)
    dt = dout.dtype
    # elements covered by no window (edges past the last window, gaps when stride > kernel)
    uncovered = (stride > kh or stride > kw or (out_h - 1) * stride + kh != height
                 or (out_w - 1) * stride + kw != width)
    if kh <= stride and kw <= stride:
        dx = (xp.zeros if uncovered else xp.empty)((N, C, height, width), dtype=dt, device=dev)
        for k in range(kh * kw):
            i, j = k // kw, k % kw
            dx = put(dx, (slice(None), slice(None), window_slice(i, stride, out_h), window_slice(j, stride, out_w)),
                     dout * xp.astype(arg == k, dt))
        return dx
    if stride == 1:  # one phase: the image itself (no aliasing: g is returned reshaped)
        g = xp.zeros((1, 1, N, C, height, width), dtype=dt, device=dev)
    else:
        pa, pb, hh, wh = _phase_geometry(kh, kw, stride, out_h, out_w)
        g = xp.zeros((pa, pb, N, C, hh, wh), dtype=dt, device=dev)
    for k in range(kh * kw):
        a, b, r, c = _offset_block(stride, k // kw, k % kw, out_h, out_w)
        g = add_at(g, (a, b, slice(None), slice(None), r, c), dout * xp.astype(arg == k, dt))
    if stride == 1:
        return xp.reshape(g, (N, C, height, width))
    dx = (xp.zeros if uncovered else xp.empty)((N, C, height, width), dtype=dt, device=dev)
    for a in range(pa):
        na = _phase_rows(height, a, stride, hh)
        for b in range(pb):
            nb = _phase_rows(width, b, stride, wh)
            dx = put(dx, (slice(None), slice(None), slice(a, a + stride * (na - 1) + 1, stride),
                          slice(b, b + stride * (nb - 1) + 1, stride)), g[a, b, :, :, :na, :nb])
    return dx


# A window mean is separable: the sum over a kh x kw window is a sum over kh rows of
# sums over kw columns. Summing along H first (row slices: contiguous rows) and then
# along W takes kh + kw - 2 additions per output instead of kh*kw - 1, and for 2x2
# stride 2 beats both the reshape-to-(N, C, H/2, 2, W/2, 2) sum (NumPy reduces short
# strided axes slowly: ~20x slower) and the four strided offset slices (~1.5x)
# (timeit, NumPy, x (50, 32, 28, 28) float32).


def _along(axis: int, sl: slice) -> tuple:
    """Index applying ``sl`` to ``axis``, every element of the other axes (the Ellipsis:
    the standard wants an index to name all axes)."""
    return (slice(None),) * axis + (sl, ...)


def _window_sum_axis(x, axis: int, k: int, stride: int, count: int):
    """Sum of the k window offsets along ``axis``: that axis becomes ``count`` long."""
    total = x[_along(axis, window_slice(0, stride, count))]
    for i in range(1, k):
        total = total + x[_along(axis, window_slice(i, stride, count))]
    return total


def _spread_axis(g, axis: int, k: int, stride: int, size: int):
    """Adjoint of _window_sum_axis: g's ``axis`` (one entry per window) becomes ``size``
    long, each entry added to the k positions its window covers along it."""
    xp = namespace(g)
    count = g.shape[axis]
    shape = tuple(g.shape[:axis]) + (size,) + tuple(g.shape[axis + 1:])
    # Windows that tile the axis write every position exactly once: no zeros needed.
    tiles = k == stride and (count - 1) * stride + k == size
    buf = (xp.empty if tiles else xp.zeros)(shape, dtype=g.dtype, device=aac.device(g))
    # Windows disjoint along the axis (k <= stride) never meet: a plain write suffices.
    write = put if k <= stride else add_at
    for i in range(k):
        buf = write(buf, _along(axis, window_slice(i, stride, count)), g)
    return buf


def window_mean(x, kh: int, kw: int, stride: int, out_h: int, out_w: int):
    """Mean of each kh x kw window (any stride, overlapping or with gaps).

    x (N, C, H, W) -> out (N, C, out_h, out_w) in x's dtype (a new array, never
    a view of x): the sum along H then along W (see above), divided by kh*kw.
    """
    rows = _window_sum_axis(x, 2, kh, stride, out_h)
    return _window_sum_axis(rows, 3, kw, stride, out_w) / (kh * kw)


def window_mean_grad(dout, kh: int, kw: int, stride: int, height: int, width: int):
    """Adjoint of window_mean: each window's dout / (kh*kw) added to every element of it.

    dout (N, C, out_h, out_w) -> dx (N, C, height, width) in dout's dtype.
    Overlapping windows accumulate; elements no window covers (gaps when stride >
    kernel, the border past the last window) get zero.
    """
    g = dout / (kh * kw)
    return _spread_axis(_spread_axis(g, 3, kw, stride, width), 2, kh, stride, height)
