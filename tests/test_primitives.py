"""Backend-registered primitives (docs/design.md, rule 2) against the portable reference.

The call shapes are not a hand-made list: the conv and pool layers are run on NumPy
over the layer tests' own configurations (both gradient algorithms, blocked and
one-block columns, every pool geometry, an empty batch) with the primitives recorded,
and every recorded call is replayed on the backend under test through its registered
version and through ``.reference``, in float64 and float32. NumPy's threaded versions
(backends/numpy_primitives.py) must agree bit for bit, registered or not, on 1 and 3
threads (odd: unequal blocks) with every call sent through the pool.
"""

import functools
import os

import numpy as np
import pytest

import portnn._windows as windows
from portnn.backends import get_backend, numpy_primitives, onednn, primitives_of
from portnn.layers import conv_backward, conv_forward, max_pool_backward, max_pool_forward
from tests.helpers import to_np, tolerance
from tests.test_conv import LAYER_CASES
from tests.test_pool import CONFIGS as POOL_CASES

REGISTRABLE = ("im2col", "col2im_add", "window_max", "window_max_grad")

#: Empty batches of the pool layer (the conv's is in _run_layers): both branches of
#: the max-pool gradient (disjoint windows, overlapping windows).
EMPTY_POOL_CASES = [((0, 2, 6, 6), 2, 2, 2), ((0, 2, 7, 7), 3, 3, 2)]


def _run_layers(rng):
    """Every conv/pool configuration of the layer tests, forward and backward, on NumPy."""
    for xs, ws, stride, pad in LAYER_CASES + [((0, 2, 5, 5), (3, 2, 3, 3), 1, 1)]:
        x, w = rng.standard_normal(xs), rng.standard_normal(ws)
        b = rng.standard_normal(ws[0])
        algorithms = ["columns"] + (["correlation"] if stride == 1 and pad < min(ws[2:]) else [])
        for algorithm in algorithms:
            for max_bytes in (2**30, 64 * ws[1] * ws[2] * ws[3]):  # one block; one image per block
                param = {"stride": stride, "pad": pad, "grad_algorithm": algorithm, "max_col_bytes": max_bytes}
                out, cache = conv_forward(x, w, b, param)
                conv_backward(rng.standard_normal(out.shape), cache)
    for xs, ph, pw, s in POOL_CASES + EMPTY_POOL_CASES:
        out, cache = max_pool_forward(np.round(rng.standard_normal(xs)), {"pool_height": ph, "pool_width": pw, "stride": s})
        max_pool_backward(rng.standard_normal(out.shape), cache)


@functools.lru_cache(maxsize=1)
def recorded_calls():
    """[(primitive name, host args)] of every distinct call the layers made above."""
    calls, seen = [], set()

    def recording(xp):
        def wrap(name, fn):
            def record(*args):
                key = (name,) + tuple(a.shape if hasattr(a, "shape") else a for a in args)
                if key not in seen:
                    seen.add(key)
                    calls.append((name, tuple(np.array(a) if hasattr(a, "shape") else a for a in args)))
                return fn(*args)
            return record
        return {name: wrap(name, getattr(windows, name).reference) for name in REGISTRABLE}

    saved = windows.primitives_of
    windows.primitives_of = recording
    try:
        _run_layers(np.random.default_rng(0))
    finally:
        windows.primitives_of = saved
    return calls


#: Calls the layers never make but the NumPy versions must handle: col2im_add of an
#: empty block of images (float64, overlapping 3x3 windows, stride 1 and 2).
EXTRA_CALLS = [
    ("col2im_add", (np.zeros((2, 4, 5, 5)), np.zeros((18, 0)), 1, 3, 3, 1, 3, 3)),
    ("col2im_add", (np.zeros((2, 0, 7, 7)), np.zeros((18, 0)), 0, 3, 3, 2, 3, 3)),
]


def _results(r):
    """A primitive's result as a tuple of host arrays (window_max returns two)."""
    return tuple(to_np(a) for a in (r if isinstance(r, tuple) else (r,)))


def _same_bits(got, want):
    """Same dtype, shape and bytes (-0.0 and NaN payloads included)."""
    return (got.dtype == want.dtype and got.shape == want.shape
            and np.array_equal(np.ascontiguousarray(got).view(np.uint8), np.ascontiguousarray(want).view(np.uint8)))


def _strided(a):
    """A non-contiguous array holding a's values (the channel-major layout the conv
    layer's views have); scalars, 0-d and 1-d arrays unchanged."""
    if not isinstance(a, np.ndarray) or a.ndim < 2:
        return a
    return np.swapaxes(np.swapaxes(a, 0, 1).copy(), 0, 1)


def test_the_layers_call_every_registrable_primitive():
    names = {name for name, _ in recorded_calls()}
    assert names == set(REGISTRABLE)
    assert len(recorded_calls()) > 40  # the layer configurations give many distinct shapes


def test_the_recorded_calls_cover_the_edge_cases():
    """Every primitive is replayed on an empty batch, with stride > 1 and, for the
    window ones, with overlapping windows (kernel > stride); all calls are float64
    (the replays add float32)."""
    calls = recorded_calls()
    for name in REGISTRABLE:
        args = [a for n, a in calls if n == name]
        first = [a[0] for a in args]
        assert all(x.dtype == np.float64 for x in first), name
        batch_axis = 0 if name.startswith("window") else 1
        if name != "col2im_add":  # the conv backward runs no block on an empty batch: EXTRA_CALLS
            assert any(x.shape[batch_axis] == 0 for x in first), f"{name}: no empty batch"
        k = 2 if name == "window_max_grad" else (1 if name in ("im2col", "window_max") else 3)
        # (kh, kw, stride) follow the arrays: im2col/window_max (x, kh, kw, s, ...),
        # col2im_add (buf, cols, n0, kh, kw, s, ...), window_max_grad (dout, arg, kh, kw, s, ...)
        geometry = [a[k:k + 3] for a in args]
        assert any(s > 1 for _, _, s in geometry), f"{name}: no stride > 1"
        assert any(kh > s or kw > s for kh, kw, s in geometry), f"{name}: no overlapping windows"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_registered_primitives_match_the_reference(backend, dtype):
    table = primitives_of(backend.xp)
    if not table:
        pytest.skip(f"{backend.name} registers no primitives (it runs the portable ones)")
    # "conv2d" is a whole layer's kernel, not a _windows primitive: tests/test_onednn.py.
    assert set(table) - {"conv2d"} <= set(REGISTRABLE)
    for name, host_args in recorded_calls():
        if name not in table:
            continue
        # The reference runs on NumPy (the same portable code, without this backend's
        # per-op cost), on the same values in the same dtype.
        host = [a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in host_args]
        args = [backend.xp.asarray(a, device=backend.device) if isinstance(a, np.ndarray) else a for a in host]
        got = _results(getattr(windows, name)(*args))
        want = _results(getattr(windows, name).reference(*host))
        shapes = [getattr(a, "shape", a) for a in host_args]
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype, (name, shapes)
            assert g.shape == w.shape, (name, shapes)
            if backend.name == "numpy":  # the same operations per element: bit-identical
                assert _same_bits(g, w), (name, shapes)
            else:
                np.testing.assert_allclose(g, w, **tolerance(dtype), err_msg=f"{name} {shapes}")


@pytest.fixture
def numpy_threads(monkeypatch):
    """use(n): n threads for NumPy's primitives and every call through the pool (no
    small-call shortcut); the environment's setting again afterwards."""
    def use(n):
        monkeypatch.setattr(numpy_primitives, "SMALL_BYTES", 0)
        numpy_primitives.set_num_threads(n)
    yield use
    numpy_primitives.set_num_threads(None)


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("threads", [3, 1])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_numpy_threaded_primitives_are_bit_identical(numpy_threads, threads, dtype, layout):
    """Every threaded NumPy version (registered or not) on every recorded call, with
    unequal blocks (3 threads) and inline (1), contiguous and non-contiguous inputs."""
    numpy_threads(threads)
    for name, host_args in recorded_calls() + EXTRA_CALLS:
        host = [a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in host_args]
        args = [_strided(a) for a in host] if layout == "strided" else [np.array(a) for a in host]
        got = _results(numpy_primitives.ALL[name](*args))
        want = _results(getattr(windows, name).reference(*host))
        shapes = [getattr(a, "shape", a) for a in host_args]
        assert len(got) == len(want), (name, shapes)
        for g, w in zip(got, want):
            assert np.array_equal(g, w) and _same_bits(g, w), (name, shapes, g.dtype, w.dtype)


def test_numpy_threaded_primitives_keep_ties_nans_and_signed_zeros(numpy_threads):
    """First maximum on ties, NaN propagation, -0.0 gradients: bit for bit."""
    numpy_threads(3)
    rng = np.random.default_rng(7)
    x = np.round(rng.standard_normal((3, 4, 9, 9)))
    x[0, 0, 2, 2], x[1, 2, 0:3, 0:3] = np.nan, -0.0
    dout = rng.standard_normal((3, 4, 4, 4))
    dout[0, 1], dout[2, 3, 0, 0] = -0.0, np.inf
    for kh, kw, s in ((2, 2, 2), (3, 3, 2), (3, 3, 1), (1, 1, 2), (2, 3, 3)):
        oh, ow = 1 + (9 - kh) // s, 1 + (9 - kw) // s
        with np.errstate(invalid="ignore"):
            got = numpy_primitives.window_max(x, kh, kw, s, oh, ow)
            want = windows.window_max.reference(x, kh, kw, s, oh, ow)
        assert all(_same_bits(g, w) for g, w in zip(got, want)), (kh, kw, s)
        d = np.resize(dout, (3, 4, oh, ow))
        with np.errstate(invalid="ignore"):
            g = numpy_primitives.window_max_grad(d, want[1], kh, kw, s, 9, 9)
            w = windows.window_max_grad.reference(d, want[1], kh, kw, s, 9, 9)
        assert _same_bits(g, w), (kh, kw, s)


def test_numpy_registers_its_threaded_primitives():
    table = primitives_of(get_backend("numpy").xp)
    kernel = onednn.conv2d()  # plus oneDNN's convolution when installed (tests/test_onednn.py)
    assert table == (numpy_primitives.PRIMITIVES if kernel is None else {**numpy_primitives.PRIMITIVES, "conv2d": kernel})
    assert primitives_of(np) == table  # numpy itself, not only array-api-compat's wrapper
    assert set(table) - {"conv2d"} <= set(numpy_primitives.ALL) == set(REGISTRABLE)
    for name in REGISTRABLE:
        assert getattr(windows, name).reference.__module__ == "portnn._windows"


@pytest.mark.parametrize("opt_in", ["", "1"])
def test_numpy_column_primitives_are_registered_on_request_only(opt_in):
    """PORTNN_NUMPY_THREADED_COLUMNS=1 adds the threaded im2col / col2im_add (not paying on
    the benchmark VM, so off by default); read when the module loads: a fresh interpreter."""
    import subprocess
    import sys

    code = "from portnn.backends import numpy_primitives as p; print(sorted(p.PRIMITIVES))"
    env = dict(os.environ, PORTNN_NUMPY_THREADED_COLUMNS=opt_in)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    expected = ["window_max", "window_max_grad"] + (["col2im_add", "im2col"] if opt_in else [])
    assert out.strip() == str(sorted(expected))


def test_numpy_thread_count_follows_the_blas_setting(monkeypatch):
    for var in ("PORTNN_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    assert numpy_primitives.num_threads() == cpus
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # OpenMP's nested list: the first level
    assert numpy_primitives.num_threads() == 4
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    assert numpy_primitives.num_threads() == 3
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "0")  # OpenBLAS's "its default": the next one
    assert numpy_primitives.num_threads() == 4
    monkeypatch.setenv("PORTNN_NUM_THREADS", "5")
    assert numpy_primitives.num_threads() == 5
    monkeypatch.setenv("PORTNN_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="PORTNN_NUM_THREADS: expected an integer >= 1, got 'two'"):
        numpy_primitives.num_threads()
    monkeypatch.setenv("PORTNN_NUM_THREADS", "2")
    try:
        numpy_primitives.set_num_threads(7)
        assert numpy_primitives.num_threads() == 7
    finally:
        numpy_primitives.set_num_threads(None)
    assert numpy_primitives.num_threads() == 2
    for bad, err in ((0, ValueError), (-1, ValueError), (True, TypeError), (2.0, TypeError), ("2", TypeError)):
        with pytest.raises(err, match="set_num_threads: expected an integer >= 1 or None"):
            numpy_primitives.set_num_threads(bad)


def test_numpy_pool_runs_every_chunk_once_and_reraises(numpy_threads):
    numpy_threads(3)
    seen = []
    numpy_primitives._parallel(lambda a, b: seen.append((a, b)), 10, 1 << 30)
    assert sorted(seen) == [(0, 3), (3, 6), (6, 10)]
    numpy_threads(2)
    seen.clear()
    numpy_primitives._parallel(lambda a, b: seen.append((a, b)), 6, 1 << 30, align=3)
    assert sorted(seen) == [(0, 3), (3, 6)]

    def fail(a, b):
        if a > 0:
            raise RuntimeError(f"chunk {a}")

    numpy_threads(3)
    with pytest.raises(RuntimeError, match="chunk"):
        numpy_primitives._parallel(fail, 9, 1 << 30)


def test_dispatch_uses_a_registered_primitive(monkeypatch):
    """A registered function really replaces the portable one (and only for its namespace)."""
    xp = get_backend("numpy").xp
    calls = []

    def fake(xt, *args):
        calls.append(args)
        return windows.im2col.reference(xt, *args)

    monkeypatch.setattr(windows, "primitives_of", lambda ns: {"im2col": fake} if ns is xp else {})
    xt = np.zeros((1, 1, 4, 4))
    windows.im2col(xt, 2, 2, 1, 3, 3)
    assert calls == [(2, 2, 1, 3, 3)]
