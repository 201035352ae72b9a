"""NumPy's threaded versions of the sliding-window primitives (docs/design.md, rule 2).

NumPy runs every copy, slice-add and elementwise pass on one core, while OpenBLAS
(and PyTorch) use them all. NumPy releases the GIL inside copies (np.copyto) and
ufunc loops on large arrays, so Python threads that run such calls on their own
part of the data run in parallel. Every function here splits its work into
balanced independent blocks, taken in turn by the calling thread and the pool:

| primitive       | blocks (ranges of, whole images where there are enough) | independent because |
|-----------------|----------------------------------------|----------------------------------------|
| im2col          | (kernel offset, channel, image) planes of the columns | each writes its own rows |
| col2im_add      | (image, channel) planes of the buffer  | no element is added to by two blocks   |
| window_max      | the N*C image planes                   | planes are independent                 |
| window_max_grad | the N*C image planes                   | planes are independent                 |

Within a block the operations are the portable ones (``portnn._windows``), element
for element and in the same order (col2im's per-kernel-offset accumulation included),
so the results are BIT-IDENTICAL to the reference; only the partition of the work,
the temporaries (written through ``out=``) and, for the max-pool pair, the shape of
each pass differ: one contiguous pass over a block instead of one NumPy inner loop
per 16-element row (see "max pooling" below), which pays on one core already.

Measured on the 2-vCPU benchmark VM (float32, the workloads' shapes, medians of
30-60 interleaved rounds with the other vCPU idle; ms; 1 thread: OPENBLAS_NUM_THREADS=1,
everything inline; 2 threads: =2, the pool for calls of SMALL_BYTES and more):

| call (workload)                               | portable  | 1 thread  | 2 threads |
|-----------------------------------------------|-----------|-----------|-----------|
| window_max 2x2 s2 (50,32,32,32) (W4, W5-50)   | 1.5-2.0   | 1.45-1.7  | 1.09-1.28 |
| window_max_grad 2x2 s2 (W4, W5-50)            | 1.4-1.6   | 1.2-1.5 (noisy: 0.7-1.25x in single runs) | 1.06-1.10 |
| window_max 3x3 s2 (50,32,33,33) (W4)          | 5.1-5.5   | 2.6-2.9   | 1.96      |
| window_max_grad 3x3 s2 (W4)                   | 5.4-5.9   | 3.3-3.7   | 2.19      |
| window_max / _grad 2x2 (256,32,32,32) (W5-256)| 26.1 / 19.0 | 24.8 / 19.0 | 14.1 / 12.7 |
| max pool layer fwd+bwd, W4 2x2                | 2.7-2.9   | 2.6 (1.05-1.09x) | 1.78 (1.61x) |
| max pool layer fwd+bwd, W4 3x3 s2             | 10.2-11.1 | 5.7-6.4 (1.7-1.8x) | 4.22 (2.63x) |
| ThreeLayerConvNet step, W5-50 / W5-256        | 27-30 / 138 | +-2 % / +-0 % | +-0 % / -3 % |

So window_max and window_max_grad are registered (PRIMITIVES). im2col and col2im_add
are pure data movement, bound by the memory system, which the second vCPU did not
widen (two threads copying 4-32 MiB each moved 0.76-1.36x what one did): 0.97-1.05x
on 1 thread, 0.92-1.40x per call on 2, and with them registered the conv layers and
W5-50 ran 1-9 % SLOWER on 2 threads (W2 24.2 -> 25.1 ms, W3 37.6 -> 38.1, W5-50
21.1 -> 22.4). They are kept here (ALL), tested, and registered only on request
(PORTNN_NUMPY_THREADED_COLUMNS=1), for machines where a measurement shows they pay.

Threads: ``num_threads()`` follows the BLAS setting (``PORTNN_NUM_THREADS``, else
``OPENBLAS_NUM_THREADS``, else ``OMP_NUM_THREADS``, else the CPUs available to the
process); ``set_num_threads(n)`` overrides it at run time. With 1 thread, and for
calls below ``SMALL_BYTES``, everything runs in the calling thread (no pool). The pool
is a module-level ThreadPoolExecutor created on first use (and forgotten in a forked
child, where its threads do not exist).

Same signatures, shapes, dtypes and results as the portable versions, which stay the
reference: tests/test_primitives.py replays every call the conv/pool layers make
through both, on 1 and 3 threads with every call through the pool, and requires
bit-identical results.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["PRIMITIVES", "ALL", "COLUMN_PRIMITIVES", "num_threads", "set_num_threads", "SMALL_BYTES", "SPLIT"]

#: Calls on fewer bytes than this run in the calling thread only. On the 2-vCPU
#: benchmark VM a second thread cost 150-250 us per max-pool call (waking a pool
#: thread, GIL hand-offs between the two threads' ~20 NumPy calls each), so 2 threads
#: lost below 3 MiB (1.1-4x slower from 32 KiB to 2 MiB) and won from 4 MiB
#: (1.15-1.6x at 4-8 MiB, 1.5-1.75x at 16 MiB; window_max / window_max_grad 2x2).
SMALL_BYTES = 4 * 2**20

#: Chunks per thread. The threads take chunks in turn, so a thread that the OS runs
#: late (the CPUs are shared) leaves its chunk to the others instead of delaying the
#: call; more chunks per thread only added NumPy calls and GIL hand-offs (2 and 3
#: measured 0.7-1.0x the speed of 1 on the W2-W4 shapes, quiet or loaded).
SPLIT = 1

_THREAD_ENV = ("PORTNN_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")

_override: int | None = None
_env_threads: tuple = (None, 1)  # (the environment it was read from, threads)
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_workers = 0


# ----------------------------------------------------------------------------- threads


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _threads_from(var: str, value: str) -> int | None:
    """The thread count ``value`` of variable ``var`` sets (OMP's "4,2" nesting list: its
    first level); None if it sets none (empty, 0 or unreadable: that library's default)."""
    first = value.split(",")[0].strip()
    n = int(first) if first.isdigit() else 0
    if n >= 1:
        return n
    if var == "PORTNN_NUM_THREADS" and value.strip():
        raise ValueError(f"PORTNN_NUM_THREADS: expected an integer >= 1, got {value!r}")
    return None


def num_threads() -> int:
    """Threads the NumPy primitives use: set_num_threads(n) if called, else
    $PORTNN_NUM_THREADS, else $OPENBLAS_NUM_THREADS, else $OMP_NUM_THREADS, else the
    number of CPUs available to the process."""
    global _env_threads
    if _override is not None:
        return _override
    env = tuple(os.environ.get(v) for v in _THREAD_ENV)
    if env != _env_threads[0]:  # read again only when the environment changed
        n = None
        for var, value in zip(_THREAD_ENV, env):
            if value is not None:
                n = _threads_from(var, value)
                if n is not None:
                    break
        _env_threads = (env, n or _cpus())
    return _env_threads[1]


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads (an int >= 1; 1 runs everything in the calling thread), or
    None to follow the environment again (num_threads)."""
    global _override
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"set_num_threads: expected an integer >= 1 or None, got {n!r}")
        if n < 1:
            raise ValueError(f"set_num_threads: expected an integer >= 1 or None, got {n!r}")
        n = int(n)
    _override = n


def _get_pool(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_workers
    with _lock:
        if _pool is None or _pool_workers < workers:
            old = _pool
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="portnn-numpy")
            _pool_workers = workers
            if old is not None:
                old.shutdown(wait=False)  # its queued blocks still run; its threads then exit
        return _pool


def _forget_pool() -> None:
    global _pool, _pool_workers
    _pool, _pool_workers = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _parallel(work, units: int, nbytes: int, align: int = 1) -> None:
    """Run ``work(a, b)`` over [0, units) in balanced chunks (SPLIT per thread, their
    bounds multiples of ``align`` where there are enough of those) that the calling
    thread and num_threads() - 1 pool threads take in turn: a thread the OS runs late
    (the CPUs are shared) delays nobody, as the others take its chunks, and a pool
    thread that has not started when every chunk is done is cancelled, not waited for.
    Calls of fewer than SMALL_BYTES, or with 1 thread, run in the calling thread as one
    chunk. Returns when every chunk is done; re-raises the first exception."""
    n = 1 if nbytes < SMALL_BYTES else min(num_threads(), units)
    if n <= 1:
        work(0, units)
        return
    count = min(units, n * SPLIT)
    if align > 1 and units % align == 0 and units // align >= count:
        bounds = [align * (units // align * t // count) for t in range(count + 1)]
    else:
        bounds = [units * t // count for t in range(count + 1)]
    taken = iter(range(count))
    lock = threading.Lock()
    errors = np.geterr()  # the caller's np.errstate is thread-local: the pool threads get it too

    def take_chunks():
        while True:
            with lock:
                t = next(taken, None)
            if t is None:
                return
            work(bounds[t], bounds[t + 1])

    def pooled():
        with np.errstate(**errors):
            take_chunks()

    pool = _get_pool(n - 1)
    futures = [pool.submit(pooled) for _ in range(n - 1)]
    try:
        take_chunks()
    finally:  # running chunks write into the caller's buffers: wait for them in any case
        for f in futures:
            if not f.cancel():
                f.exception()
    for f in futures:
        if not f.cancelled():
            f.result()


def _boxes(a: int, b: int, shape: tuple) -> list:
    """The flat range [a, b) of a row-major ``shape`` as a few boxes (tuples of slices,
    at most 2*len(shape) - 1 of them)."""
    if a >= b:
        return []
    if len(shape) == 1:
        return [(slice(a, b),)]
    inner = 1
    for s in shape[1:]:
        inner *= s
    i0, r0 = divmod(a, inner)
    i1, r1 = divmod(b, inner)
    if i0 == i1:
        return [(slice(i0, i0 + 1),) + box for box in _boxes(r0, r1, shape[1:])]
    out = []
    if r0:
        out += [(slice(i0, i0 + 1),) + box for box in _boxes(r0, inner, shape[1:])]
        i0 += 1
    if i1 > i0:
        out.append((slice(i0, i1),) + tuple(slice(0, s) for s in shape[1:]))
    if r1:
        out += [(slice(i1, i1 + 1),) + box for box in _boxes(0, r1, shape[1:])]
    return out


def _window_slice(offset: int, stride: int, count: int) -> slice:
    return slice(offset, offset + stride * (count - 1) + 1, stride)


# ----------------------------------------------------------------------------- convolution


def im2col(xt, kh: int, kw: int, stride: int, out_h: int, out_w: int):
    """portnn._windows.im2col: xt (C, n, Hp, Wp) -> cols (kh*kw*C, n*out_h*out_w).

    Blocks: ranges of the (kernel offset, channel, image) planes of the output; each
    is one np.copyto from the strided view of its offset per offset it covers."""
    C, n = xt.shape[0], xt.shape[1]
    K = kh * kw
    out = np.empty((K, C, n, out_h, out_w), dtype=xt.dtype)
    rows = [_window_slice(i, stride, out_h) for i in range(kh)]
    cols = [_window_slice(j, stride, out_w) for j in range(kw)]

    def work(a, b):
        for ks, cs, ms in _boxes(a, b, (K, C, n)):
            for k in range(ks.start, ks.stop):
                np.copyto(out[k, cs, ms], xt[cs, ms, rows[k // kw], cols[k % kw]])

    _parallel(work, K * C * n, out.nbytes, align=C * n)
    return out.reshape(K * C, n * out_h * out_w)


def col2im_add(buf, cols, n0: int, kh: int, kw: int, stride: int, out_h: int, out_w: int):
    """portnn._windows.col2im_add: buf (C, N, Hp, Wp) += the adjoint of im2col of cols
    (the columns of images n0 .. n0+n-1); returns buf.

    Blocks: ranges of the (image, channel) planes of buf, which no two blocks share;
    each adds the kernel offsets into its planes in offset order, as the reference."""
    if not buf.flags.writeable:  # the reference returns a new array then (layers pass fresh buffers)
        buf = np.array(buf)
    C = buf.shape[0]
    n = cols.shape[1] // (out_h * out_w)
    K = kh * kw
    parts = np.reshape(cols, (K, C, n, out_h, out_w))
    rows = [_window_slice(i, stride, out_h) for i in range(kh)]
    colsl = [_window_slice(j, stride, out_w) for j in range(kw)]

    def work(a, b):
        for ms, cs in _boxes(a, b, (n, C)):
            target = buf[cs, n0 + ms.start:n0 + ms.stop]
            for k in range(K):
                v = target[:, :, rows[k // kw], colsl[k % kw]]
                np.add(v, parts[k, cs, ms], out=v)

    _parallel(work, n * C, cols.nbytes, align=C)
    return buf


# ----------------------------------------------------------------------------- max pooling
# The phase split of portnn._windows (see there): for stride s the s x s sub-images
# x[:, :, a::s, b::s] are copied into one buffer where window offset (i, j) is the block
# rows i//s .. i//s + out_h, columns j//s .. j//s + out_w of phase (i % s, j % s).
# Here each phase of a chunk of m image planes is ONE flat run of m*hh*wh elements,
# and every pass works on the whole run shifted by the offset's (i//s)*wh + j//s:
# the elements it produces at rows >= out_h or columns >= out_w of a plane are
# garbage, never stored, and what it reads there comes from the same chunk
# (the shift never leaves the run: it is truncated by the shift). One long
# contiguous loop per pass instead of one loop per out_w-long row (which is what
# NumPy's per-row overhead makes slow: 16-element rows on the W4 shapes).


def _phase_geometry(kh, kw, stride, out_h, out_w):
    if stride == 1:
        return 1, 1, out_h + kh - 1, out_w + kw - 1
    return min(stride, kh), min(stride, kw), out_h + (kh - 1) // stride, out_w + (kw - 1) // stride


def _phase_rows(height, a, stride, hh):
    return min(hh, max(0, -(-(height - a) // stride)))


def _shift(stride, k, kw, wh):
    """(phase a, phase b, flat shift) of window offset k in a run of rows wh long."""
    i, j = divmod(k, kw)
    if stride == 1:
        return 0, 0, i * wh + j
    return i % stride, j % stride, (i // stride) * wh + j // stride


def _phase_runs(x, kh, kw, stride, out_h, out_w):
    """x (n, c, H, W) -> (pa, pb, n*c*hh*wh): each phase one flat run (a view of x when
    stride == 1 and x is contiguous); cells past the input's edge are zero."""
    n, c, H, W = x.shape
    pa, pb, hh, wh = _phase_geometry(kh, kw, stride, out_h, out_w)
    if stride == 1:
        return np.ascontiguousarray(x).reshape(1, 1, n * c * H * W)
    runs = np.empty((pa, pb, n * c * hh * wh), dtype=x.dtype)
    for a in range(pa):
        na = _phase_rows(H, a, stride, hh)
        for b in range(pb):
            nb = _phase_rows(W, b, stride, wh)
            ph = runs[a, b].reshape(n, c, hh, wh)
            np.copyto(ph[:, :, :na, :nb], x[:, :, a:a + stride * (na - 1) + 1:stride,
                                             b:b + stride * (nb - 1) + 1:stride])
            if na < hh:
                ph[:, :, na:, :] = 0
            if nb < wh:
                ph[:, :, :na, nb:] = 0
    return runs


def _window_max_planes(x, out, arg, kh, kw, stride, out_h, out_w):
    """window_max of the planes x (n, c, H, W) into out and arg (n, c, out_h, out_w),
    contiguous views of the results."""
    n, c = x.shape[0], x.shape[1]
    _, _, hh, wh = _phase_geometry(kh, kw, stride, out_h, out_w)
    L = n * c * hh * wh
    runs = _phase_runs(x, kh, kw, stride, out_h, out_w)
    exact = hh == out_h and wh == out_w  # no garbage: work in the results themselves
    o = out.reshape(L) if exact else np.empty(L, dtype=out.dtype)
    g = arg.reshape(L) if exact else np.empty(L, dtype=arg.dtype)
    if kh * kw == 1:
        np.add(runs[0, 0], 0.0, out=o)  # the reference's `out + 0.0` (-0.0 becomes 0.0)
    else:
        np.copyto(o, runs[0, 0])
    g[...] = 0
    mask = np.empty(L, dtype=bool)
    step = np.empty(L, dtype=arg.dtype)
    for k in range(1, kh * kw):
        a, b, d = _shift(stride, k, kw, wh)
        v, ok, gk, mk, sk = runs[a, b, d:], o[:L - d], g[:L - d], mask[:L - d], step[:L - d]
        np.greater(v, ok, out=mk)
        # the reference's arg = maximum(arg, astype(v > out) * k), the bool mask read as
        # 0/1 integers (np.copyto(..., where=) and np.where are 10-50x slower here)
        np.multiply(mk.view(np.int8), k, out=sk, dtype=arg.dtype)
        np.maximum(gk, sk, out=gk)
        np.maximum(ok, v, out=ok)
    if not exact:
        np.copyto(out, o.reshape(n, c, hh, wh)[:, :, :out_h, :out_w])
        np.copyto(arg, g.reshape(n, c, hh, wh)[:, :, :out_h, :out_w])


def window_max(x, kh: int, kw: int, stride: int, out_h: int, out_w: int):
    """portnn._windows.window_max: x (N, C, H, W) -> out, arg (N, C, out_h, out_w).

    Blocks: ranges of the N*C image planes."""
    N, C, H, W = x.shape
    window = kh * kw
    adt = np.int8 if window <= 127 else (np.int16 if window <= 32767 else np.int32)
    out = np.empty((N, C, out_h, out_w), dtype=x.dtype)
    arg = np.empty((N, C, out_h, out_w), dtype=adt)

    def work(a, b):
        for ns, cs in _boxes(a, b, (N, C)):
            _window_max_planes(x[ns, cs], out[ns, cs], arg[ns, cs], kh, kw, stride, out_h, out_w)

    _parallel(work, N * C, x.nbytes, align=C)
    return out, arg


def _window_max_grad_planes(dout, arg, dx, kh, kw, stride, out_h, out_w, uncovered):
    """window_max_grad of the planes dout, arg (n, c, out_h, out_w) into dx (n, c, H, W),
    a contiguous view of the result."""
    n, c, H, W = dx.shape
    if kh <= stride and kw <= stride:  # windows do not overlap: one write per offset
        mask = np.empty(arg.shape, dtype=bool)
        if uncovered:
            dx[...] = 0
        for k in range(kh * kw):
            np.equal(arg, k, out=mask)
            # dout * astype(arg == k): the mask is cast to 0.0 / 1.0
            np.multiply(dout, mask, out=dx[:, :, _window_slice(k // kw, stride, out_h),
                                           _window_slice(k % kw, stride, out_w)])
        return
    pa, pb, hh, wh = _phase_geometry(kh, kw, stride, out_h, out_w)
    L = n * c * hh * wh
    # dout and arg laid out as the phase runs; at the garbage cells dout is +0.0, so
    # what they add there is +0.0, which leaves every sum unchanged (a sum that starts
    # at +0.0 is never -0.0): the same sums, in the same order, as the reference
    d = np.zeros((n, c, hh, wh), dtype=dout.dtype)
    np.copyto(d[:, :, :out_h, :out_w], dout)
    e = np.zeros((n, c, hh, wh), dtype=arg.dtype)
    np.copyto(e[:, :, :out_h, :out_w], arg)
    d, e = d.reshape(L), e.reshape(L)
    if stride == 1:  # one phase: the image itself
        dx[...] = 0
        runs = dx.reshape(1, 1, L)
    else:
        runs = np.zeros((pa, pb, L), dtype=dout.dtype)
    mask = np.empty(L, dtype=bool)
    tmp = np.empty(L, dtype=dout.dtype)
    for k in range(kh * kw):
        a, b, s = _shift(stride, k, kw, wh)
        np.equal(e[:L - s], k, out=mask[:L - s])
        np.multiply(d[:L - s], mask[:L - s], out=tmp[:L - s])
        v = runs[a, b, s:]
        np.add(v, tmp[:L - s], out=v)
    if stride == 1:
        return
    if uncovered:
        dx[...] = 0
    for a in range(pa):
        na = _phase_rows(H, a, stride, hh)
        for b in range(pb):
            nb = _phase_rows(W, b, stride, wh)
            np.copyto(dx[:, :, a:a + stride * (na - 1) + 1:stride, b:b + stride * (nb - 1) + 1:stride],
                      runs[a, b].reshape(n, c, hh, wh)[:, :, :na, :nb])


def window_max_grad(dout, arg, kh: int, kw: int, stride: int, height: int, width: int):
    """portnn._windows.window_max_grad: dout, arg (N, C, out_h, out_w) -> dx (N, C, height, width).

    Blocks: ranges of the N*C image planes."""
    N, C, out_h, out_w = dout.shape
    uncovered = (stride > kh or stride > kw or (out_h - 1) * stride + kh != height
                 or (out_w - 1) * stride + kw != width)
    dx = np.empty((N, C, height, width), dtype=dout.dtype)

    def work(a, b):
        for ns, cs in _boxes(a, b, (N, C)):
            _window_max_grad_planes(dout[ns, cs], arg[ns, cs], dx[ns, cs], kh, kw, stride, out_h, out_w,
                                    uncovered)

    _parallel(work, N * C, dx.nbytes, align=C)
    return dx


#: Every threaded version, by name (what could be registered).
ALL = {"im2col": im2col, "col2im_add": col2im_add, "window_max": window_max,
       "window_max_grad": window_max_grad}

#: The column primitives, registered only with PORTNN_NUMPY_THREADED_COLUMNS=1: pure
#: data movement bound by the memory system, which the second vCPU of the benchmark VM
#: did not widen (1-9 % slower conv steps there, see above); a machine with more
#: memory bandwidth per core may measure otherwise (python -m benchmarks --only W2,W3).
COLUMN_PRIMITIVES = ("im2col", "col2im_add")

#: name -> function: the ones registered for the numpy namespace, looked up by
#: portnn._windows: those measured to pay on 2 threads and not to lose on 1 (the
#: max-pool pair; docs/benchmarks.md), plus the column pair when opted in.
PRIMITIVES = {name: ALL[name] for name in ("window_max", "window_max_grad")}
if os.environ.get("PORTNN_NUMPY_THREADED_COLUMNS", "") == "1":
    PRIMITIVES.update((name, ALL[name]) for name in COLUMN_PRIMITIVES)
