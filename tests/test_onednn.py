"""oneDNN's convolution (backends/onednn.py), the numpy backend's "conv2d" kernel,
against the portable im2col + GEMM path it replaces (portnn.layers.conv), which stays
the reference: every call shape of the conv layer tests (odd sizes, stride > 1, even
filters, padding larger than needed), strided and transposed views, need_dx=False,
the layer's dispatch (float32 and N >= 1 only; float64 and the empty batch stay
portable), the opt-out, and concurrent calls from threads.

Runs where the optional extra is installed (``pip install 'portnn[onednn]'``; the test
extra installs it, so CI runs these), and skips with that reason elsewhere.
"""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import portnn
import portnn.backends as backends
from portnn.backends import onednn, primitives_of
from portnn.layers import conv_backward, conv_forward
from tests.helpers import tolerance
from tests.test_conv import LAYER_CASES

KERNEL = onednn.conv2d()
pytestmark = pytest.mark.skipif(
    KERNEL is None, reason="oneDNN not installed (pip install 'portnn[onednn]'), or PORTNN_ONEDNN=0")

#: The layer tests' shapes plus the benchmark's (W2: 7x7 3 -> 32, W3: 3x3 64 -> 64) and
#: a stride that leaves input columns unused.
CASES = LAYER_CASES + [((4, 3, 16, 16), (8, 3, 7, 7), 1, 3), ((3, 16, 8, 8), (16, 16, 3, 3), 1, 1),
                       ((2, 3, 11, 10), (4, 3, 3, 3), 3, 0)]
IDS = ["x{}-w{}x{}-s{}-p{}".format("x".join(map(str, xs)), ws[2], ws[3], s, p) for xs, ws, s, p in CASES]


def _portable(monkeypatch):
    """Run the numpy backend without its conv2d kernel (the reference path)."""
    xp = portnn.get_backend("numpy").xp
    table = dict(primitives_of(xp))
    table.pop("conv2d", None)
    monkeypatch.setitem(backends._PRIMITIVES, xp, table)


def _inputs(k, dtype=np.float32):
    xs, ws, stride, pad = CASES[k]
    rng = np.random.default_rng(500 + k)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    Ho, Wo = 1 + (xs[2] + 2 * pad - ws[2]) // stride, 1 + (xs[3] + 2 * pad - ws[3]) // stride
    dout = rng.standard_normal((xs[0], ws[0], Ho, Wo))
    return [a.astype(dtype) for a in (x, w, b, dout)], {"stride": stride, "pad": pad}


def _assert_close(actual, expected, what):
    # Against the float64 reference, with float32's tolerance and an absolute term on
    # the values' scale: a sum of K = C*HH*WW float32 products (147 for the 7x7 case,
    # values ~20) carries rounding of ~1e-6 of its largest terms, on either path.
    tol = tolerance("float32")
    tol["atol"] = max(tol["atol"], 1e-6 * float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, **tol, err_msg=what)


@pytest.mark.parametrize("k", range(len(CASES)), ids=IDS)
def test_kernel_matches_the_portable_path(k, monkeypatch):
    (x, w, b, dout), param = _inputs(k)
    out, cache = conv_forward(x, w, b, param)
    assert cache.grad_algorithm == "kernel" and cache.kernel is KERNEL
    assert out.dtype == np.float32 and out.shape == dout.shape
    grads = conv_backward(dout, cache)
    _, dw_only, db_only = conv_backward(dout, cache, need_dx=False)

    _portable(monkeypatch)
    x64, w64, b64, d64 = (a.astype(np.float64) for a in (x, w, b, dout))
    ref, ref_cache = conv_forward(x64, w64, b64, param)
    assert ref_cache.kernel is None
    ref_grads = conv_backward(d64, ref_cache)
    _assert_close(out, ref, "out")
    for name, g, r in zip(("dx", "dw", "db"), grads, ref_grads, strict=True):
        assert g.dtype == np.float32 and g.shape == r.shape, name
        _assert_close(g, r, name)
    np.testing.assert_array_equal(dw_only, grads[1])
    np.testing.assert_array_equal(db_only, grads[2])


def test_kernel_reads_views_by_their_strides():
    """The layouts the layers hand it: the portable conv's (F, N)-transposed output,
    relu of it, and strided slices; results equal those of contiguous copies."""
    (x, w, b, dout), param = _inputs(len(LAYER_CASES))  # W2-like
    cm = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)  # channel-major memory
    big = np.zeros((x.shape[0] * 2,) + x.shape[1:3] + (x.shape[3] * 2,), np.float32)
    big[::2, :, :, ::2] = x
    sliced = big[::2, :, :, ::2]
    wv = np.ascontiguousarray(w.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    bv = np.repeat(b, 2)[::2]
    dv = np.ascontiguousarray(dout.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    out, cache = conv_forward(x, w, b, param)
    grads = conv_backward(dout, cache)
    for xv in (cm, sliced):
        o, c = conv_forward(xv, wv, bv, param)
        np.testing.assert_allclose(o, out, rtol=1e-6, atol=1e-5)
        for g, r in zip(conv_backward(dv, c), grads, strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-4)
    assert not x.flags.writeable or np.shares_memory(cache.x, x)  # kept, not copied


def test_float64_and_empty_batches_stay_portable():
    (x, w, b, dout), param = _inputs(0, np.float64)
    assert conv_forward(x, w, b, param)[1].kernel is None
    x0 = np.zeros((0,) + x.shape[1:], np.float32)
    out, cache = conv_forward(x0, w.astype(np.float32), b.astype(np.float32), param)
    assert cache.kernel is None and out.shape[0] == 0


@pytest.mark.parametrize("algorithm", ["columns", "correlation"])
def test_an_explicit_gradient_algorithm_runs_the_portable_code(algorithm):
    (x, w, b, dout), param = _inputs(0)
    _, cache = conv_forward(x, w, b, dict(param, grad_algorithm=algorithm))
    assert cache.kernel is None and cache.grad_algorithm == algorithm


def test_a_model_step_matches_the_portable_path(monkeypatch):
    """ThreeLayerConvNet's loss and gradients, float32, with and without the kernel."""
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((6, 3, 12, 12)).astype(np.float32), rng.integers(0, 10, 6)

    def step():
        m = portnn.ThreeLayerConvNet(input_dim=(3, 12, 12), num_filters=5, filter_size=5, hidden_dim=7,
                                     dtype="float32", seed=0, reg=0.1)
        return m.loss(X, y)

    loss, grads = step()
    _portable(monkeypatch)
    ref_loss, ref_grads = step()
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_concurrent_calls_from_threads_agree_with_serial_ones():
    """Data-parallel thread ranks call the kernel at once: a stream per thread, one run
    at a time per cached plan."""
    cases = [_inputs(k) for k in (0, 1, len(LAYER_CASES))]
    serial = [conv_backward(d, conv_forward(x, w, b, p)[1]) for (x, w, b, d), p in cases]
    results, errors = {}, []

    def worker(i):
        try:
            for _ in range(5):
                for j, ((x, w, b, d), p) in enumerate(cases):
                    results[(i, j)] = conv_backward(d, conv_forward(x, w, b, p)[1])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (_, j), grads in results.items():
        for g, r in zip(grads, serial[j], strict=True):
            np.testing.assert_array_equal(g, r)


def test_opting_out_and_the_library_facts():
    assert onednn.version()[0] == 3 and os.path.exists(onednn.library_path())
    code = ("import portnn, portnn.backends as b; "
            "print('conv2d' in b.primitives_of(portnn.get_backend('numpy').xp))")
    env = dict(os.environ, PORTNN_ONEDNN="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={k: v for k, v in os.environ.items() if k != "PORTNN_ONEDNN"})
    assert out.stdout.strip() == "True"


def test_least_recently_used_plans_are_released(monkeypatch):
    """At most PLANS cached plans; a released plan's shape is planned again, correctly."""
    monkeypatch.setattr(onednn, "PLANS", 2)
    kernel = onednn.Conv2d(KERNEL.api)  # an empty cache

    def grads(k):
        (x, w, b, d), p = _inputs(k)
        kernel.forward(x, w, b, p["stride"], p["pad"])
        return kernel.backward(d, x, w, p["stride"], p["pad"])

    first = [grads(k) for k in range(4)]
    assert len(kernel._plans) == 2
    again = [grads(k) for k in range(4)]
    for g1, g2 in zip(first, again, strict=True):
        for a, b in zip(g1, g2, strict=True):
            np.testing.assert_array_equal(a, b)
