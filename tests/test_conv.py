"""conv_forward / conv_backward on every backend: the layer harness (loop oracle, numerical
gradients, parity, strided inputs, dtypes) and the loop backward,
float32 parity, chunking (equal to rounding), a memory bound and the public-boundary errors."""

import functools
import tracemalloc

import numpy as np
import pytest

from portnn.layers.conv import conv_backward, conv_forward
from tests.helpers import assert_on_backend, to_np, tolerance
from tests.layer_harness import DTYPES, assert_close, check_layer

# (x shape, w shape, stride, pad): 1x1, 3x3, 7x7, non-square kernels and inputs,
# strides 1/2/3 (3 leaves a floor remainder), pads 0/1/3, kernel == padded input.
CONFIGS = [
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, 1),
    ((2, 3, 7, 6), (4, 3, 3, 3), 2, 0),
    ((2, 2, 5, 5), (3, 2, 1, 1), 1, 0),
    ((2, 2, 5, 4), (3, 2, 1, 1), 2, 1),
    ((2, 3, 9, 8), (2, 3, 7, 7), 1, 3),
    ((1, 2, 8, 7), (2, 2, 7, 7), 2, 3),
    ((1, 2, 6, 9), (3, 2, 2, 3), 2, 1),
    ((2, 1, 8, 5), (2, 1, 3, 1), 3, 3),
    ((2, 2, 5, 4), (2, 2, 5, 4), 1, 0),
]
IDS = [f"x{'x'.join(map(str, c[0]))}-w{c[1][2]}x{c[1][3]}-s{c[2]}-p{c[3]}" for c in CONFIGS]


# -- host oracles ---------------------------------------------------------------


def naive_conv_forward(x, w, b, stride, pad):
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    Ho, Wo = 1 + (H + 2 * pad - HH) // stride, 1 + (W + 2 * pad - WW) // stride
    out = np.zeros((N, F, Ho, Wo))
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    win = xp[n, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
                    out[n, f, i, j] = np.sum(win * w[f]) + b[f]
    return out


def naive_conv_backward(dout, x, w, stride, pad):
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for n in range(N):
        for f in range(F):
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    hs, ws = slice(i * stride, i * stride + HH), slice(j * stride, j * stride + WW)
                    dxp[n, :, hs, ws] += w[f] * dout[n, f, i, j]
                    dw[f] += xp[n, :, hs, ws] * dout[n, f, i, j]
    dx = dxp[:, :, pad:pad + H, pad:pad + W]
    return dx, dw, dout.sum(axis=(0, 2, 3))


@functools.lru_cache(maxsize=None)
def case(k):
    """Host inputs, upstream gradient and oracle results of CONFIGS[k] (float64)."""
    xs, ws, stride, pad = CONFIGS[k]
    rng = np.random.default_rng(100 + k)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    out = naive_conv_forward(x, w, b, stride, pad)
    dout = rng.standard_normal(out.shape)
    grads = naive_conv_backward(dout, x, w, stride, pad)
    return x, w, b, dout, out, grads


def run(backend, x, w, b, dout, param, dtype="float64", need_dx=True):
    xb, wb, bb, db = (backend.asarray(a, dtype=dtype) for a in (x, w, b, dout))
    out, cache = conv_forward(xb, wb, bb, dict(param))
    grads = conv_backward(db, cache, need_dx=need_dx)
    for a in (out, *grads):
        if a is not None:
            assert_on_backend(a, backend)
    return backend.to_numpy(out), tuple(None if g is None else backend.to_numpy(g) for g in grads)


# -- correctness ----------------------------------------------------------------


# CONFIGS, plus a larger stride-2 case (it was the float32 parity case).
LAYER_CASES = CONFIGS + [((3, 4, 9, 8), (5, 4, 3, 3), 2, 1)]
LAYER_IDS = IDS + ["x3x4x9x8-w3x3-s2-p1"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", range(len(LAYER_CASES)), ids=LAYER_IDS)
def test_conv_layer(backend, k, dtype):
    """The layer harness (loop oracle, numerical gradients, numpy parity, strided
    inputs, dtypes), and the gradients against the loop backward too."""
    xs, ws, stride, pad = LAYER_CASES[k]
    param = {"stride": stride, "pad": pad}
    res = check_layer(backend, dtype, forward=lambda x, w, b: conv_forward(x, w, b, dict(param)),
                      backward=conv_backward, seed=100 + k, numerical_on="numpy",
                      reference=lambda x, w, b: naive_conv_forward(x, w, b, stride, pad),
                      inputs=lambda rng: (rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])))
    x, w, _ = (a.astype(np.float64) for a in res.host)
    expected = naive_conv_backward(to_np(res.dout).astype(np.float64), x, w, stride, pad)
    for name, g, r in zip(("dx", "dw", "db"), res.grads, expected, strict=True):
        assert_close(g, r, dtype, name)


def test_default_conv_param_is_stride1_pad0(backend):
    x, w, b, dout, _, _ = case(2)
    out_default, _ = run(backend, x, w, b, dout, {})
    np.testing.assert_allclose(out_default, naive_conv_forward(x, w, b, 1, 0), **tolerance("float64"))


def test_need_dx_false_skips_dx(backend):
    x, w, b, dout, _, grads_ref = case(0)
    param = {"stride": CONFIGS[0][2], "pad": CONFIGS[0][3]}
    _, (dx, dw, db) = run(backend, x, w, b, dout, param, need_dx=False)
    assert dx is None
    np.testing.assert_allclose(dw, grads_ref[1], **tolerance("float64"))
    np.testing.assert_allclose(db, grads_ref[2], **tolerance("float64"))


# -- the two gradient algorithms --------------------------------------------

# conv_param['grad_algorithm']: "correlation" (stride 1, pad < kernel: dx and dw from
# one im2col of dout, correlation with the flipped filters and D @ x^T) or "columns"
# (x's columns and col2im). Both are checked against the oracle on the shapes where
# the correlation applies, with and without blocks.
CORR_CASES = [
    ((2, 4, 6, 5), (3, 4, 3, 3), 1),   # 'same' padding
    ((2, 4, 6, 5), (4, 4, 3, 3), 0),   # valid, F == C
    ((3, 5, 7, 6), (2, 5, 3, 2), 1),   # non-square kernel, pad 1 < 2
    ((2, 3, 8, 8), (3, 3, 5, 5), 4),   # pad = kernel - 1 (full correlation)
    ((2, 2, 4, 4), (1, 2, 1, 1), 0),   # 1x1
    ((2, 2, 5, 5), (4, 2, 3, 3), 1),   # F > C: "auto" picks columns, "correlation" still exact
]
ALGORITHMS = ["columns", "correlation"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("k", range(len(CORR_CASES)))
def test_gradient_algorithms_match_oracle(backend, k, algorithm):
    xs, ws, pad = CORR_CASES[k]
    rng = np.random.default_rng(40 + k)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    out_ref = naive_conv_forward(x, w, b, 1, pad)
    dout = rng.standard_normal(out_ref.shape)
    dx_ref, dw_ref, db_ref = naive_conv_backward(dout, x, w, 1, pad)
    per_image = xs[1] * ws[2] * ws[3] * out_ref.shape[2] * out_ref.shape[3] * 8
    for max_bytes in (None, per_image):  # one block, or one image per block
        param = {"stride": 1, "pad": pad, "grad_algorithm": algorithm}
        if max_bytes is not None:
            param["max_col_bytes"] = max_bytes
        out, (dx, dw, db) = run(backend, x, w, b, dout, param)
        np.testing.assert_allclose(out, out_ref, **tolerance("float64"))
        np.testing.assert_allclose(dx, dx_ref, **tolerance("float64"))
        np.testing.assert_allclose(dw, dw_ref, **tolerance("float64"))
        np.testing.assert_allclose(db, db_ref, **tolerance("float64"))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_empty_batch_both_algorithms(backend, algorithm):
    rng = np.random.default_rng(7)
    x, w, b = np.zeros((0, 4, 6, 6)), rng.standard_normal((3, 4, 3, 3)), rng.standard_normal(3)
    param = {"stride": 1, "pad": 1, "grad_algorithm": algorithm}
    out, (dx, dw, db) = run(backend, x, w, b, np.zeros((0, 3, 6, 6)), param)
    assert out.shape == (0, 3, 6, 6) and dx.shape == (0, 4, 6, 6)
    assert dw.shape == (3, 4, 3, 3) and not dw.any() and db.shape == (3,) and not db.any()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_need_dx_false_with_either_algorithm(backend, algorithm):
    """need_dx=False gives dw and db (from the columns path) whatever the forward chose."""
    x, w, b, dout, _, grads_ref = case(0)  # stride 1, pad 1, F > C
    param = {"stride": 1, "pad": 1, "grad_algorithm": algorithm}
    for max_bytes in (None, 1):
        if max_bytes is not None:
            param["max_col_bytes"] = max_bytes
        _, (dx, dw, db) = run(backend, x, w, b, dout, param, need_dx=False)
        assert dx is None
        np.testing.assert_allclose(dw, grads_ref[1], **tolerance("float64"))
        np.testing.assert_allclose(db, grads_ref[2], **tolerance("float64"))


@pytest.mark.parametrize("xs,ws,stride,pad,expected", [
    ((2, 4, 6, 5), (3, 4, 3, 3), 1, 1, "correlation"),  # stride 1, F <= C, pad < kernel
    ((2, 4, 6, 5), (4, 4, 3, 3), 1, 0, "correlation"),  # F == C
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, 1, "columns"),      # F > C
    ((2, 4, 7, 6), (3, 4, 3, 3), 2, 1, "columns"),      # stride 2
    ((2, 4, 6, 6), (3, 4, 3, 3), 1, 3, "columns"),      # pad >= kernel
])
def test_auto_records_the_chosen_algorithm(backend, xs, ws, stride, pad, expected):
    rng = np.random.default_rng(1)
    x, w, b = (backend.asarray(rng.standard_normal(s), dtype="float64") for s in (xs, ws, ws[:1]))
    for param in ({"stride": stride, "pad": pad}, {"stride": stride, "pad": pad, "grad_algorithm": "auto"}):
        _, cache = conv_forward(x, w, b, param)
        assert cache.grad_algorithm == expected
        assert (cache.cols is None) == (expected == "correlation")
    _, cache = conv_forward(x, w, b, {"stride": stride, "pad": pad, "grad_algorithm": "columns"})
    assert cache.grad_algorithm == "columns" and cache.cols is not None


# -- chunking over the batch ----------------------------------------------------


@pytest.mark.parametrize("need_dx", [True, False])
def test_chunked_equals_unchunked(backend, need_dx):
    # 5 images, 1..3 per chunk (uneven last chunk), stride 2 pad 1, non-square.
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((5, 3, 7, 6)), rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4)
    per_image = 3 * 3 * 2 * 4 * 4 * 8  # C*HH*WW*H'*W' * itemsize
    dout = rng.standard_normal((5, 4, 4, 4))
    base = {"stride": 2, "pad": 1}
    out_ref, grads_ref = run(backend, x, w, b, dout, base, need_dx=need_dx)
    for max_bytes in (1, 2 * per_image, 3 * per_image + 7):
        out, grads = run(backend, x, w, b, dout, dict(base, max_col_bytes=max_bytes), need_dx=need_dx)
        # dw is a sum of per-chunk GEMMs (one big GEMM per pass, layout "CN"), so a
        # chunked run agrees with an unchunked one to rounding, not bitwise.
        for a, r in zip((out, *grads), (out_ref, *grads_ref), strict=True):
            if r is None:
                assert a is None
            else:
                np.testing.assert_allclose(a, r, **tolerance("float64"))


def test_chunked_peak_memory_is_bounded():
    """NumPy + tracemalloc: columns 8x the working size run in about one working size."""
    rng = np.random.default_rng(5)
    N, C, H, W, F, K = 32, 8, 16, 16, 8, 5
    x, w, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((F, C, K, K)), rng.standard_normal(F)
    dout = rng.standard_normal((N, F, H, W))
    col_bytes = N * C * K * K * H * W * 8  # 12.5 MiB
    work = col_bytes // 8  # 1.56 MiB: the whole column matrix is 8x the working size
    io_bytes = x.nbytes  # 0.5 MiB; out and dx have x's size here (F == C, same H, W)
    param = {"stride": 1, "pad": 2}

    def peaks(param):
        tracemalloc.start()
        try:
            out, cache = conv_forward(x, w, b, param)
            fwd_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            grads = conv_backward(dout, cache)
            bwd_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return out, grads, fwd_peak, bwd_peak

    conv_backward(dout, conv_forward(x, w, b, dict(param, max_col_bytes=work))[1])  # warm-up:
    # the first call pays one-off allocations (lazy imports, caches) that are not the layer's
    out_c, grads_c, fwd_c, bwd_c = peaks(dict(param, max_col_bytes=work))
    bound = 2.5 * work + 2 * io_bytes  # columns + temporaries, plus out (kept) and dx
    assert fwd_c < bound, (fwd_c, bound)
    assert bwd_c < bound, (bwd_c, bound)
    # the same call without the bound holds the whole column matrix (the test discriminates)
    out_u, grads_u, fwd_u, bwd_u = peaks(param)
    assert fwd_u > col_bytes > 2 * bound
    np.testing.assert_allclose(out_c, out_u, **tolerance("float64"))
    for g, r in zip(grads_c, grads_u, strict=True):
        np.testing.assert_allclose(g, r, **tolerance("float64"))
    print(f"working size {work / 2**20:.2f} MiB, columns {col_bytes / 2**20:.2f} MiB; chunked peak "
          f"fwd {fwd_c / 2**20:.2f} MiB, bwd {bwd_c / 2**20:.2f} MiB (bound {bound / 2**20:.2f}); "
          f"unchunked fwd {fwd_u / 2**20:.2f} MiB, bwd {bwd_u / 2**20:.2f} MiB")


# -- errors at the public boundary ----------------------------------------------


def _bad_cases():
    f64 = dict(dtype="float64")
    ok = dict(x=((2, 3, 6, 6), f64), w=((4, 3, 3, 3), f64), b=((4,), f64), param={"stride": 1, "pad": 1})
    cases = {
        "x-not-4d": (dict(x=((3, 6, 6), f64)), ValueError, r"^x: expected a 4-d array"),
        "w-not-4d": (dict(w=((4, 3, 9), f64)), ValueError, r"^w: expected a 4-d array"),
        "channels": (dict(w=((4, 2, 3, 3), f64)), ValueError, r"^w: expected 3 input channels"),
        "b-shape": (dict(b=((5,), f64)), ValueError, r"^b: expected shape \(4,\)"),
        "b-2d": (dict(b=((4, 1), f64)), ValueError, r"^b: expected a 1-d array"),
        "stride-0": (dict(param={"stride": 0, "pad": 1}), ValueError, r"conv_param\['stride'\]"),
        "stride-float": (dict(param={"stride": 1.5, "pad": 1}), TypeError, r"conv_param\['stride'\]"),
        "pad-neg": (dict(param={"stride": 1, "pad": -1}), ValueError, r"conv_param\['pad'\]"),
        "kernel-too-big": (dict(w=((4, 3, 9, 3), f64)), ValueError, r"^w: kernel 9x3 is larger than the padded input 8x8"),
        "x-int": (dict(x=((2, 3, 6, 6), dict(dtype="int64"))), TypeError, r"^x: expected a float32 or float64"),
        "w-bool": (dict(w=((4, 3, 3, 3), dict(dtype="bool"))), TypeError, r"^w: expected a float32 or float64"),
        "w-dtype-mismatch": (dict(w=((4, 3, 3, 3), dict(dtype="float32"))), TypeError, r"^w: expected dtype float64"),
        "b-dtype-mismatch": (dict(b=((4,), dict(dtype="float32"))), TypeError, r"^b: expected dtype float64"),
        "max-col-bytes": (dict(param={"max_col_bytes": 0}), ValueError, r"conv_param\['max_col_bytes'\]"),
        "param-not-dict": (dict(param=[1, 1]), TypeError, r"^conv_param: expected a dict"),
        "grad-algorithm-unknown": (dict(param={"grad_algorithm": "im2col"}), ValueError,
                                   r"^conv_param\['grad_algorithm'\]: expected one of 'auto', 'columns', "
                                   r"'correlation', got 'im2col'"),
        "grad-algorithm-not-str": (dict(param={"grad_algorithm": 1}), ValueError,
                                   r"^conv_param\['grad_algorithm'\]: expected one of"),
        "correlation-stride-2": (dict(param={"stride": 2, "pad": 1, "grad_algorithm": "correlation"}),
                                 ValueError, r"^conv_param\['grad_algorithm'\]: .*stride 2.*got 'correlation'"),
        "correlation-pad-too-big": (dict(param={"stride": 1, "pad": 3, "grad_algorithm": "correlation"}),
                                    ValueError, r"^conv_param\['grad_algorithm'\]: .*pad 3.*got 'correlation'"),
    }
    return ok, cases


_OK, _CASES = _bad_cases()


def _make(backend, spec):
    shape, kw = spec
    a = np.random.default_rng(0).standard_normal(shape)
    if kw["dtype"] == "int64":
        return backend.asarray(a.astype(np.int64))
    if kw["dtype"] == "bool":
        return backend.asarray(a > 0)
    return backend.asarray(a, dtype=kw["dtype"])


@pytest.mark.parametrize("name", list(_CASES))
def test_bad_inputs_raise(backend, name):
    change, exc, match = _CASES[name]
    args = dict(_OK, **change)
    x, w, b = (_make(backend, args[k]) for k in ("x", "w", "b"))
    with pytest.raises(exc, match=match):
        conv_forward(x, w, b, args["param"])


def test_bad_dout_raises(backend):
    x, w, b = (_make(backend, _OK[k]) for k in ("x", "w", "b"))
    out, cache = conv_forward(x, w, b, _OK["param"])
    with pytest.raises(ValueError, match=r"^dout: expected shape \(2, 4, 6, 6\)"):
        conv_backward(backend.asarray(np.zeros((2, 4, 6, 5)), dtype="float64"), cache)
    with pytest.raises(TypeError, match=r"^dout: expected dtype float64"):
        conv_backward(backend.asarray(np.zeros((2, 4, 6, 6)), dtype="float32"), cache)
