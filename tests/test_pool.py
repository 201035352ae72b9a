"""max_pool_forward / max_pool_backward on every backend: first-max loop oracle, the
layer harness (numerical gradients, parity, strided inputs, float32/float64), ties,
adjacent (non-overlapping) windows, errors."""

import functools

import numpy as np
import pytest

from portnn._windows import window_max, window_max_grad
from portnn.layers.pool import max_pool_backward, max_pool_forward
from tests.helpers import assert_on_backend, to_np
from tests.layer_harness import DTYPES, assert_close, check_layer

# (x shape, pool_height, pool_width, stride)
CONFIGS = [
    ((2, 3, 8, 8), 2, 2, 2),  # tiling (fast path)
    ((2, 2, 7, 9), 2, 2, 2),  # adjacent windows that do not cover the input (fast path + border)
    ((2, 2, 9, 9), 3, 3, 2),  # overlapping
    ((2, 2, 7, 8), 3, 3, 1),  # heavily overlapping, non-square input
    ((1, 3, 6, 7), 2, 3, 1),  # non-square window
    ((2, 2, 8, 7), 3, 2, 3),  # stride larger than the window width: gaps
    ((1, 2, 10, 11), 3, 3, 3),  # adjacent 3x3, border rows/cols
    ((2, 2, 4, 5), 1, 1, 1),  # identity
    ((1, 1, 5, 5), 5, 5, 1),  # one window = whole image
]
IDS = [f"x{c[0][2]}x{c[0][3]}-{c[1]}x{c[2]}-s{c[3]}" for c in CONFIGS]


def pp(ph, pw, s):
    return {"pool_height": ph, "pool_width": pw, "stride": s}


# -- host oracle ----------------------------------------------------------------


def naive_pool(x, ph, pw, s, dout=None):
    """Loop max pool; the backward sends each window's dout to its FIRST max (np.argmax)."""
    N, C, H, W = x.shape
    Ho, Wo = 1 + (H - ph) // s, 1 + (W - pw) // s
    out, dx = np.zeros((N, C, Ho, Wo)), np.zeros_like(x)
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    win = x[n, c, i * s:i * s + ph, j * s:j * s + pw]
                    out[n, c, i, j] = win.max()
                    if dout is not None:
                        k = int(np.argmax(win))  # first occurrence in row-major order
                        dx[n, c, i * s + k // pw, j * s + k % pw] += dout[n, c, i, j]
    return out, dx


def relu_rounded(rng, shape, scale=2.0):
    """ReLU'd, rounded data: many zeros and small integers, so windows tie often."""
    return np.round(np.maximum(rng.standard_normal(shape), 0.0) * scale)


@functools.lru_cache(maxsize=None)
def case(k):
    xs, ph, pw, s = CONFIGS[k]
    rng = np.random.default_rng(200 + k)
    x = relu_rounded(rng, xs)
    Ho, Wo = 1 + (xs[2] - ph) // s, 1 + (xs[3] - pw) // s
    dout = rng.standard_normal((xs[0], xs[1], Ho, Wo))
    out, dx = naive_pool(x, ph, pw, s, dout)
    return x, dout, out, dx


def run(backend, x, dout, param, dtype="float64"):
    xb, db = backend.asarray(x, dtype=dtype), backend.asarray(dout, dtype=dtype)
    out, cache = max_pool_forward(xb, dict(param))
    dx = max_pool_backward(db, cache)
    assert_on_backend(out, backend)
    assert_on_backend(dx, backend)
    return backend.to_numpy(out), backend.to_numpy(dx)


# -- correctness ----------------------------------------------------------------


@pytest.mark.parametrize("k", range(len(CONFIGS)), ids=IDS)
def test_matches_first_max_oracle(backend, k):
    """Tied data: values AND the first-max routing must match the loop version."""
    x, dout, out_ref, dx_ref = case(k)
    out, dx = run(backend, x, dout, pp(*CONFIGS[k][1:]))
    assert out.shape == out_ref.shape and out.dtype == np.float64
    assert np.array_equal(out, out_ref)
    assert dx.shape == x.shape
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-14, atol=1e-15)  # tighter than tolerance(): first-max routing is exact


def distinct(shape):
    """Distinct values 0.01 apart (no ties, no kinks within h)."""
    return lambda rng: (rng.permutation(int(np.prod(shape))) * 0.01).reshape(shape) + rng.uniform(0, 1e-3, shape)


# (x shape, pool_height, pool_width, stride, input generator, seed)
LAYER_CASES = [(*CONFIGS[k], distinct(CONFIGS[k][0]), 300 + k) for k in (0, 1, 2, 3, 5, 6)] + [
    ((3, 4, 9, 10), 2, 2, 2, lambda rng: rng.standard_normal((3, 4, 9, 10)), 17),
    ((3, 4, 9, 10), 3, 3, 2, lambda rng: rng.standard_normal((3, 4, 9, 10)), 17),
]
LAYER_IDS = [IDS[k] for k in (0, 1, 2, 3, 5, 6)] + ["x9x10-2x2-s2-normal", "x9x10-3x3-s2-normal"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ph,pw,s,inputs,seed", LAYER_CASES, ids=LAYER_IDS)
def test_pool_layer(backend, dtype, xs, ph, pw, s, inputs, seed):
    """The layer harness (loop oracle, numerical gradients, parity, strided inputs,
    dtypes); a max is a copy, so the output is also exactly the oracle's."""
    res = check_layer(backend, dtype, inputs=inputs, seed=seed, numerical_on="numpy",
                      forward=lambda x: max_pool_forward(x, pp(ph, pw, s)), backward=max_pool_backward,
                      reference=lambda x: naive_pool(x, ph, pw, s)[0])
    np.testing.assert_array_equal(to_np(res.out), naive_pool(res.host[0], ph, pw, s)[0].astype(dtype))
    dx_ref = naive_pool(res.host[0].astype(np.float64), ph, pw, s, to_np(res.dout).astype(np.float64))[1]
    assert_close(res.grads[0], dx_ref, dtype, "dx vs the loop backward")


@pytest.mark.parametrize("ph,pw,s", [(2, 2, 2), (3, 3, 2), (3, 3, 1)])
def test_ties_send_each_window_gradient_once(backend, ph, pw, s):
    rng = np.random.default_rng(11)
    x = relu_rounded(rng, (4, 3, 12, 12), scale=1.0)
    N, C, H, W = x.shape
    Ho, Wo = 1 + (H - ph) // s, 1 + (W - pw) // s
    dout = rng.integers(-3, 4, (N, C, Ho, Wo)).astype(np.float64)  # integers: sums are exact
    out, dx = run(backend, x, dout, pp(ph, pw, s))
    _, dx_ref = naive_pool(x, ph, pw, s, dout)
    assert np.array_equal(dx, dx_ref)
    assert dx.sum() == dout.sum()  # gradient mass is conserved exactly
    # the data really is tied, and an equality mask (x == window max) would be wrong
    tied = 0
    eq_mass = 0.0
    for i in range(Ho):
        for j in range(Wo):
            win = x[:, :, i * s:i * s + ph, j * s:j * s + pw]
            n_max = (win == out[:, :, i:i + 1, j:j + 1]).sum(axis=(2, 3))
            tied += int((n_max > 1).sum())
            eq_mass += float((n_max * dout[:, :, i, j]).sum())
    assert tied > 0.2 * N * C * Ho * Wo
    assert np.abs(dout).sum() > 0 and eq_mass != dout.sum()


@pytest.mark.parametrize("shape,k", [((2, 3, 8, 8), 2), ((2, 2, 7, 9), 2), ((1, 2, 10, 11), 3),
                                     ((1, 1, 4, 4), 4)])
def test_adjacent_windows_match_first_max_oracle(backend, shape, k):
    """window_max / window_max_grad on k x k windows with stride k (the non-overlapping
    case, written straight into dx's strided view) equal the loop oracle, ties included."""
    rng = np.random.default_rng(13)
    x_host = relu_rounded(rng, shape, scale=1.0)
    x = backend.asarray(x_host, dtype="float64")
    H, W = shape[2], shape[3]
    Ho, Wo = 1 + (H - k) // k, 1 + (W - k) // k
    out, arg = window_max(x, k, k, k, Ho, Wo)
    dout_host = rng.standard_normal((shape[0], shape[1], Ho, Wo))
    dx = window_max_grad(backend.asarray(dout_host, dtype="float64"), arg, k, k, k, H, W)
    assert_on_backend(out, backend)
    assert_on_backend(dx, backend)
    out_ref, dx_ref = naive_pool(x_host, k, k, k, dout_host)
    assert np.array_equal(backend.to_numpy(out), out_ref)
    assert np.array_equal(backend.to_numpy(dx), dx_ref)


def get_numpy():
    from portnn.backends import get_backend

    return get_backend("numpy")


def test_large_window_offsets_beyond_int8():
    """12x12 windows have 144 offsets: the argmax index dtype must hold them."""
    rng = np.random.default_rng(19)
    x = relu_rounded(rng, (2, 2, 13, 14), scale=3.0)
    dout = rng.standard_normal((2, 2, 2, 3))
    out, dx = run(get_numpy(), x, dout, pp(12, 12, 1))
    out_ref, dx_ref = naive_pool(x, 12, 12, 1, dout)
    assert np.array_equal(out, out_ref)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-14, atol=1e-15)  # tighter than tolerance(): first-max routing is exact


def test_forward_output_is_not_a_view_of_x():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    out, _ = max_pool_forward(x, pp(1, 1, 1))
    out[...] = -1.0
    assert x[0, 0, 0, 0] == 0.0


# -- errors -----------------------------------------------------------------------

BAD = {
    "x-3d": ((2, 6, 6), "float64", pp(2, 2, 2), ValueError, r"^x: expected a 4-d array"),
    "x-int": ((1, 2, 6, 6), "int64", pp(2, 2, 2), TypeError, r"^x: expected a float32 or float64"),
    "x-bool": ((1, 2, 6, 6), "bool", pp(2, 2, 2), TypeError, r"^x: expected a float32 or float64"),
    "height-0": ((1, 2, 6, 6), "float64", pp(0, 2, 2), ValueError, r"pool_param\['pool_height'\]"),
    "width-float": ((1, 2, 6, 6), "float64", pp(2, 2.0, 2), TypeError, r"pool_param\['pool_width'\]"),
    "stride-0": ((1, 2, 6, 6), "float64", pp(2, 2, 0), ValueError, r"pool_param\['stride'\]"),
    "stride-missing": ((1, 2, 6, 6), "float64", {"pool_height": 2, "pool_width": 2}, ValueError,
                       r"pool_param\['stride'\]: missing"),
    "window-too-big": ((1, 2, 6, 5), "float64", pp(3, 6, 1), ValueError, r"^pool_param: window 3x6 is larger"),
    "param-not-dict": ((1, 2, 6, 6), "float64", (2, 2, 2), TypeError, r"^pool_param: expected a dict"),
}


def bad_x(backend, shape, dtype):
    """The x of a BAD row on ``backend``: random values as int64, bool or a float dtype."""
    a = np.random.default_rng(0).standard_normal(shape)
    if dtype == "int64":
        return backend.asarray(a.astype(np.int64))
    if dtype == "bool":
        return backend.asarray(a > 0)
    return backend.asarray(a, dtype=dtype)


@pytest.mark.parametrize("name", list(BAD))
def test_bad_inputs_raise(backend, name):
    shape, dtype, param, exc, match = BAD[name]
    x = bad_x(backend, shape, dtype)
    with pytest.raises(exc, match=match):
        max_pool_forward(x, param)


def test_bad_dout_raises(backend):
    x = backend.asarray(np.ones((1, 2, 6, 6)), dtype="float64")
    _, cache = max_pool_forward(x, pp(2, 2, 2))
    with pytest.raises(ValueError, match=r"^dout: expected shape \(1, 2, 3, 3\)"):
        max_pool_backward(backend.asarray(np.ones((1, 2, 3, 2)), dtype="float64"), cache)
    with pytest.raises(TypeError, match=r"^dout: expected dtype float64"):
        max_pool_backward(backend.asarray(np.ones((1, 2, 3, 3)), dtype="float32"), cache)
