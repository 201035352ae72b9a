"""avg_pool_forward / avg_pool_backward on every backend: a loop oracle, the layer
harness (numerical gradients, parity, strided and read-only inputs, float32/float64),
the backward as the forward's exact adjoint, float32 kept, errors. The window
geometries and the bad pool_params are max pooling's (tests/test_pool.py)."""

import functools
import itertools

import numpy as np
import pytest

from portnn.layers.pool import AvgPoolCache, avg_pool_backward, avg_pool_forward, max_pool_forward
from tests.helpers import assert_on_backend, assert_refuses_foreign_dout, to_np
from tests.layer_harness import DTYPES, assert_close, check_layer
from tests.test_pool import BAD, CONFIGS, IDS, bad_x, pp

# -- host oracle ----------------------------------------------------------------


def naive_avg_pool(x, ph, pw, s, dout=None):
    """Loop over the window positions: out = the window's mean; dx gets dout / (ph*pw)
    on every element of the window (overlaps add up, uncovered elements stay 0)."""
    Ho, Wo = 1 + (x.shape[2] - ph) // s, 1 + (x.shape[3] - pw) // s
    out = np.zeros(x.shape[:2] + (Ho, Wo))
    dx = np.zeros(x.shape)
    for i, j in itertools.product(range(Ho), range(Wo)):
        rows, cols = slice(i * s, i * s + ph), slice(j * s, j * s + pw)
        out[:, :, i, j] = x[:, :, rows, cols].mean(axis=(2, 3))
        if dout is not None:
            dx[:, :, rows, cols] += dout[:, :, i, j, None, None] / (ph * pw)
    return out, dx


@functools.lru_cache(maxsize=None)
def case(k):
    """Config k's host x, dout and the oracle's out and dx (float64)."""
    xs, ph, pw, s = CONFIGS[k]
    rng = np.random.default_rng(400 + k)
    x = rng.standard_normal(xs)
    dout = rng.standard_normal(naive_avg_pool(x, ph, pw, s)[0].shape)
    return (x, dout, *naive_avg_pool(x, ph, pw, s, dout))


def run(backend, x, dout, param, dtype="float64"):
    out, cache = avg_pool_forward(backend.asarray(x, dtype=dtype), dict(param))
    dx = avg_pool_backward(backend.asarray(dout, dtype=dtype), cache)
    for a in (out, dx):
        assert_on_backend(a, backend)
        assert a.dtype == backend.dtype(dtype)
    return to_np(out), to_np(dx)


# -- correctness ----------------------------------------------------------------


@pytest.mark.parametrize("k", range(len(CONFIGS)), ids=IDS)
def test_matches_loop_oracle(backend, k):
    x, dout, out_ref, dx_ref = case(k)
    out, dx = run(backend, x, dout, pp(*CONFIGS[k][1:]))
    assert_close(out, out_ref, "float64", "out vs the loop oracle")
    assert_close(dx, dx_ref, "float64", "dx vs the loop oracle")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", range(len(CONFIGS)), ids=IDS)
def test_avg_pool_layer(backend, dtype, k):
    """The layer harness, and its run's dx against the loop backward."""
    xs, ph, pw, s = CONFIGS[k]
    res = check_layer(backend, dtype, inputs=lambda rng: rng.standard_normal(xs), seed=500 + k,
                      numerical_on="numpy",
                      forward=lambda x: avg_pool_forward(x, pp(ph, pw, s)), backward=avg_pool_backward,
                      reference=lambda x: naive_avg_pool(x, ph, pw, s)[0])
    dx_ref = naive_avg_pool(res.host[0].astype(np.float64), ph, pw, s, to_np(res.dout).astype(np.float64))[1]
    assert_close(res.grads[0], dx_ref, dtype, "dx vs the loop backward")


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8], ids=[IDS[k] for k in (1, 2, 3, 5, 8)])
def test_backward_is_the_adjoint_and_keeps_the_gradient_mass(backend, k):
    """The forward is linear, so <forward(x), dout> = <x, backward(dout)>; and every
    window hands out exactly its dout (integer dout over 1/(ph*pw): exact when ph*pw
    is a power of two, else to rounding)."""
    x, dout_normal, _, _ = case(k)
    _, ph, pw, s = CONFIGS[k]
    dout = np.random.default_rng(600 + k).integers(-4, 5, dout_normal.shape).astype(np.float64)
    out, dx = run(backend, x, dout, pp(ph, pw, s))
    np.testing.assert_allclose(np.vdot(out, dout), np.vdot(x, dx), rtol=1e-12)
    np.testing.assert_allclose(dx.sum(), dout.sum(), rtol=1e-12, atol=1e-12)


def test_float32_stays_float32(backend):
    """A 3x3 window divides by 9: the Python int must not promote float32 (docs/design.md, rule 4)."""
    x, dout, out_ref, dx_ref = case(2)
    out, dx = run(backend, x, dout, pp(3, 3, 2), dtype="float32")
    assert out.dtype == dx.dtype == np.float32
    assert_close(out, out_ref, "float32", "float32 out")
    assert_close(dx, dx_ref, "float32", "float32 dx")


def test_cache_records_the_geometry(backend):
    x = backend.asarray(np.ones((2, 3, 8, 7)), dtype="float32")
    out, cache = avg_pool_forward(x, pp(3, 2, 3))
    assert isinstance(cache, AvgPoolCache)
    assert cache == AvgPoolCache(x_shape=(2, 3, 8, 7), dtype=x.dtype, out_shape=(2, 3, 2, 2),
                                 pool_height=3, pool_width=2, stride=3, origin=(backend.xp, backend.device))
    assert tuple(out.shape) == cache.out_shape


def test_forward_output_is_not_a_view_of_x():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    out, _ = avg_pool_forward(x, pp(1, 1, 1))
    out[...] = -1.0
    assert x[0, 0, 0, 0] == 0.0


# -- errors -----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BAD))
def test_bad_inputs_raise(backend, name):
    """avg pooling checks pool_param and x exactly as max pooling does."""
    shape, dtype, param, exc, match = BAD[name]
    with pytest.raises(exc, match=match):
        avg_pool_forward(bad_x(backend, shape, dtype), param)


def test_bad_dout_raises(backend):
    x = backend.asarray(np.ones((1, 2, 6, 6)), dtype="float64")
    _, cache = avg_pool_forward(x, pp(2, 2, 2))
    with pytest.raises(ValueError, match=r"^avg_pool_backward: dout: expected shape \(1, 2, 3, 3\) "
                                         r"\(the forward's output\), got \(1, 2, 3, 2\)$"):
        avg_pool_backward(backend.asarray(np.ones((1, 2, 3, 2)), dtype="float64"), cache)
    with pytest.raises(TypeError, match=r"^avg_pool_backward: dout: expected dtype float64 \(the forward's dtype\), "
                                        r"got float32$"):
        avg_pool_backward(backend.asarray(np.ones((1, 2, 3, 3)), dtype="float32"), cache)
    with pytest.raises(TypeError, match=r"^avg_pool_backward: dout: expected an array, got list$"):
        avg_pool_backward([[1.0]], cache)
    with pytest.raises(TypeError, match=r"^avg_pool_backward: cache must be what avg_pool_forward returned, "
                                        r"got MaxPoolCache$"):
        avg_pool_backward(backend.asarray(np.ones((1, 2, 3, 3)), dtype="float64"), max_pool_forward(x, pp(2, 2, 2))[1])


def test_dout_of_another_backend_or_device_is_refused(backend):
    """The cache holds no array, so it records where x lived: a dout from elsewhere is
    refused by name (it used to pass, or fail with 'expected float64, got float64')."""
    x = backend.asarray(np.ones((1, 2, 4, 4)), dtype="float64")
    _, cache = avg_pool_forward(x, pp(2, 2, 2))
    assert_refuses_foreign_dout(backend, avg_pool_backward, cache, (1, 2, 2, 2), "avg_pool_backward")
