"""JAX's versions of three sliding-window primitives (docs/design.md, rule 2).

The portable primitives in ``portnn._windows`` are written for arrays that can be
written in place: im2col stacks kh*kw strided slices, col2im and the max-pool
gradient slice-add into a fresh buffer. XLA compiles a slice-write on an immutable
array into a scatter and a stack of many slices into one concatenate, both slow on
its CPU backend (measured under jax.jit, float32, docs/benchmarks.md "JAX"):

| primitive          | shape                                    | portable | here   |
|--------------------|------------------------------------------|----------|--------|
| im2col             | (3, 50, 38, 38), 7x7, stride 1           | ~16 ms   | ~3 ms  |
| window_max_grad    | (50, 32, 16, 16) from 32x32, 2x2 stride 2 | ~20 ms   | ~1 ms  |

So these are written the way XLA likes: im2col as ONE gather along the flattened
image plane with a small host-built index (kh*kw*out_h*out_w entries, the same for
every channel and image), and every "add each window's values back onto the image"
as an overlap-add: per window offset, a zero-pad to the offset's position in its
stride phase, summed (XLA fuses the pads and adds into one loop), then the stride
phases interleaved by one stack + transpose + reshape. No scatter anywhere.

This module imports jax: portnn.backends loads it only for arrays of the jax namespace.
Same signatures, shapes, dtypes and results as the portable versions, which stay the
reference: tests/test_primitives.py compares the two on every call shape the layers use.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["PRIMITIVES"]


@functools.lru_cache(maxsize=64)
def _plane_index(kh, kw, stride, out_h, out_w, width):
    """(kh*kw*out_h*out_w,) int32: flat position in a (., width) image plane of
    element (r, q) of window offset (i, j), in the order (i, j, r, q)."""
    i = np.arange(kh).reshape(kh, 1, 1, 1)
    j = np.arange(kw).reshape(1, kw, 1, 1)
    r = np.arange(out_h).reshape(1, 1, out_h, 1)
    q = np.arange(out_w).reshape(1, 1, 1, out_w)
    idx = (r * stride + i) * width + q * stride + j
    return idx.reshape(-1).astype(np.int32)


# Each primitive is one jitted program with its geometry static: under an outer
# jax.jit it is inlined, and in eager mode it runs as one fused program compiled once
# per shape (instead of one small program per pad, slice and add).
@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def im2col(xt, kh, kw, stride, out_h, out_w):
    """portnn._windows.im2col: xt (C, n, Hp, Wp) -> cols (kh*kw*C, n*out_h*out_w)."""
    C, n, Hp, Wp = xt.shape
    P = out_h * out_w
    idx = _plane_index(kh, kw, stride, out_h, out_w, Wp)
    # mode='clip': the indices are in range by construction, so no out-of-range fill is needed
    g = jnp.take(jnp.reshape(xt, (C * n, Hp * Wp)), idx, axis=1, mode="clip")  # (C*n, kh*kw*P)
    g = jnp.transpose(jnp.reshape(g, (C, n, kh * kw, P)), (2, 0, 1, 3))  # (kh*kw, C, n, P)
    return jnp.reshape(g, (kh * kw * C, n * P))


def _overlap_add(parts, kh, kw, stride, out_h, out_w, height, width):
    """Sum of window values back onto the image.

    parts[k] (..., out_h, out_w) holds, for window offset k = i*kw + j, the value
    each window puts on its element (i, j), i.e. on image element
    (r*stride + i, q*stride + j). Returns (..., height, width), zeros where no
    window reaches. Offset (i, j) lies in stride phase (i % s, j % s) at phase
    position (r + i//s, q + j//s), so each phase is a sum of zero-padded parts,
    and the image is the phases interleaved.
    """
    s = stride
    lead = parts[0].shape[:-2]
    hh, wh = out_h + (kh - 1) // s, out_w + (kw - 1) // s  # rows/cols of each phase
    no_pad = [(0, 0)] * len(lead)
    phase = {}
    for k, part in enumerate(parts):
        i, j = divmod(k, kw)
        si, sj = i // s, j // s
        placed = jnp.pad(part, no_pad + [(si, hh - out_h - si), (sj, wh - out_w - sj)])
        key = (i % s, j % s)
        phase[key] = placed if key not in phase else phase[key] + placed
    zero = jnp.zeros(lead + (hh, wh), dtype=parts[0].dtype)
    grid = jnp.stack([jnp.stack([phase.get((a, b), zero) for b in range(s)], axis=-1)
                      for a in range(s)], axis=-3)  # (..., hh, s, wh, s)
    img = jnp.reshape(grid, lead + (hh * s, wh * s))
    # Rows/cols past the image received nothing (no window reaches them): crop; rows
    # no phase holds (past the last window) are zero: pad.
    img = img[..., :height, :width]
    return jnp.pad(img, no_pad + [(0, height - img.shape[-2]), (0, width - img.shape[-1])])


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6, 7))
def col2im_add(buf, cols, n0, kh, kw, stride, out_h, out_w):
    """portnn._windows.col2im_add: buf (C, N, Hp, Wp) + the adjoint of im2col of cols."""
    C, _, Hp, Wp = buf.shape
    n = cols.shape[1] // (out_h * out_w)
    parts = jnp.reshape(cols, (kh * kw, C, n, out_h, out_w))
    added = _overlap_add([parts[k] for k in range(kh * kw)], kh, kw, stride, out_h, out_w, Hp, Wp)
    if n == buf.shape[1]:
        return buf + added
    return buf.at[:, n0:n0 + n].add(added)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def window_max_grad(dout, arg, kh, kw, stride, height, width):
    """portnn._windows.window_max_grad: each window's dout onto its first maximum."""
    dt = dout.dtype
    parts = [dout * (arg == k).astype(dt) for k in range(kh * kw)]
    return _overlap_add(parts, kh, kw, stride, dout.shape[2], dout.shape[3], height, width)


#: name -> function, looked up by portnn._windows for arrays of the jax namespace.
PRIMITIVES = {"im2col": im2col, "col2im_add": col2im_add, "window_max_grad": window_max_grad}
