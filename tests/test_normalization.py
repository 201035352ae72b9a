"""Batch / layer / spatial batch / group norm: one core, checked against loop oracles."""

import numpy as np
import pytest

from portnn.layers import (
    batchnorm_backward, batchnorm_backward_alt, batchnorm_forward,
    layernorm_backward, layernorm_forward,
    spatial_batchnorm_backward, spatial_batchnorm_forward,
    spatial_groupnorm_backward, spatial_groupnorm_forward,
)
from tests.helpers import assert_on_backend, numeric_grad, put, rel_error, to_np


def standardise(v, eps=1e-5):
    """Oracle: standardise a 1-d vector with the biased variance, written out."""
    m = sum(v) / len(v)
    var = sum((a - m) ** 2 for a in v) / len(v)
    return np.array([(a - m) / np.sqrt(var + eps) for a in v])


def bn_oracle(x, g, b):
    out = np.empty_like(x)
    for d in range(x.shape[1]):
        out[:, d] = g[d] * standardise(x[:, d]) + b[d]
    return out


def ln_oracle(x, g, b):
    return np.stack([g * standardise(row) + b for row in x])


def sbn_oracle(x, g, b):
    out = np.empty_like(x)
    for c in range(x.shape[1]):
        out[:, c] = (g[c] * standardise(x[:, c].reshape(-1)) + b[c]).reshape(out[:, c].shape)
    return out


def gn_oracle(x, g, b, G):
    n, c, h, w = x.shape
    out = np.empty_like(x)
    for i in range(n):
        for k in range(G):
            sl = slice(k * c // G, (k + 1) * c // G)
            out[i, sl] = standardise(x[i, sl].reshape(-1)).reshape(out[i, sl].shape)
    return out * g + b


def _grad_check(backend, fwd, bwd, arrays, dout):
    """fwd(*backend arrays) -> out; checks every gradient bwd returns numerically."""
    out, cache = fwd(*put(backend, *arrays))
    grads = bwd(put(backend, dout), cache)
    for k, g in enumerate(grads):
        assert_on_backend(g, backend)
        def f(a, k=k):
            args = list(arrays)
            args[k] = a
            return to_np(fwd(*put(backend, *args))[0])
        num = numeric_grad(f, arrays[k], dout)
        assert rel_error(to_np(g), num) < 1e-6, f"gradient {k}"


def test_batchnorm_train_forward_and_running_stats(backend, rng):
    x = rng.standard_normal((7, 4)) * 3 + 2
    g, b = rng.standard_normal(4), rng.standard_normal(4)
    bn_param = {"mode": "train"}
    out, _ = batchnorm_forward(*put(backend, x, g, b), bn_param)
    assert_on_backend(out, backend)
    np.testing.assert_allclose(to_np(out), bn_oracle(x, g, b), rtol=1e-10, atol=1e-12)
    assert_on_backend(bn_param["running_mean"], backend)
    np.testing.assert_allclose(to_np(bn_param["running_mean"]), 0.1 * x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(to_np(bn_param["running_var"]), 0.1 * x.var(0), rtol=1e-12)
    bn_param["mode"] = "test"
    out_t, _ = batchnorm_forward(*put(backend, x, g, b), bn_param)
    expected = g * (x - 0.1 * x.mean(0)) / np.sqrt(0.1 * x.var(0) + 1e-5) + b
    np.testing.assert_allclose(to_np(out_t), expected, rtol=1e-10)


@pytest.mark.parametrize("bwd", [batchnorm_backward, batchnorm_backward_alt])
def test_batchnorm_gradients(backend, rng, bwd):
    x, g, b = rng.standard_normal((5, 3)), rng.standard_normal(3), rng.standard_normal(3)
    _grad_check(backend, lambda *a: batchnorm_forward(*a, {"mode": "train"}), bwd,
                [x, g, b], rng.standard_normal((5, 3)))


def test_batchnorm_test_mode_gradient(backend, rng):
    x, g, b = rng.standard_normal((5, 3)), rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), rng.random(3) + 0.5
    def fwd(xa, ga, ba):
        p = {"mode": "test", "running_mean": put(backend, rm), "running_var": put(backend, rv)}
        return batchnorm_forward(xa, ga, ba, p)
    _grad_check(backend, fwd, batchnorm_backward, [x, g, b], rng.standard_normal((5, 3)))


def test_layernorm(backend, rng):
    x, g, b = rng.standard_normal((4, 6)) * 2, rng.standard_normal(6), rng.standard_normal(6)
    out, _ = layernorm_forward(*put(backend, x, g, b), {})
    np.testing.assert_allclose(to_np(out), ln_oracle(x, g, b), rtol=1e-10, atol=1e-12)
    _grad_check(backend, lambda *a: layernorm_forward(*a, {}), layernorm_backward,
                [x, g, b], rng.standard_normal((4, 6)))


def test_spatial_batchnorm(backend, rng):
    x = rng.standard_normal((3, 2, 4, 5)) * 2 + 1
    g, b = rng.standard_normal(2), rng.standard_normal(2)
    p = {"mode": "train"}
    out, _ = spatial_batchnorm_forward(*put(backend, x, g, b), p)
    np.testing.assert_allclose(to_np(out), sbn_oracle(x, g, b), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(to_np(p["running_mean"]), 0.1 * x.mean((0, 2, 3)), rtol=1e-12)
    _grad_check(backend, lambda *a: spatial_batchnorm_forward(*a, {"mode": "train"}),
                spatial_batchnorm_backward, [x, g, b], rng.standard_normal(x.shape))


@pytest.mark.parametrize("G", [1, 2, 6])
def test_spatial_groupnorm(backend, rng, G):
    x = rng.standard_normal((2, 6, 3, 2)) * 2 + 1
    g, b = rng.standard_normal((1, 6, 1, 1)), rng.standard_normal((1, 6, 1, 1))
    out, _ = spatial_groupnorm_forward(*put(backend, x, g, b), G, {})
    np.testing.assert_allclose(to_np(out), gn_oracle(x, g, b, G), rtol=1e-10, atol=1e-12)
    _grad_check(backend, lambda *a: spatial_groupnorm_forward(*a, G, {}),
                spatial_groupnorm_backward, [x, g, b], rng.standard_normal(x.shape))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float32_parity(backend, rng, dtype):
    x, g, b = rng.standard_normal((16, 8)), rng.standard_normal(8), rng.standard_normal(8)
    out, cache = batchnorm_forward(*put(backend, x, g, b, dtype=dtype), {"mode": "train"})
    dx, dg, db = batchnorm_backward(put(backend, np.ones((16, 8)), dtype=dtype), cache)
    for a in (out, dx, dg, db):
        assert a.dtype == backend.dtype(dtype)
    tol = 1e-4 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(to_np(out), bn_oracle(x, g, b), rtol=tol, atol=tol)


def test_normalization_errors(backend, rng):
    x, g, b = put(backend, rng.standard_normal((4, 3)), rng.standard_normal(3), rng.standard_normal(3))
    with pytest.raises(ValueError, match="mode"):
        batchnorm_forward(x, g, b, {})
    bad = put(backend, rng.standard_normal(5))
    with pytest.raises(ValueError, match=r"gamma: expected shape \(3,\)"):
        batchnorm_forward(x, bad, b, {"mode": "train"})
    with pytest.raises(ValueError, match="eps"):
        layernorm_forward(x, g, b, {"eps": -1.0})
    p = {"mode": "train", "momentum": 1.5}
    with pytest.raises(ValueError, match="momentum"):
        batchnorm_forward(x, g, b, p)
    assert "running_mean" not in p  # nothing stored before the error
    x4 = put(backend, rng.standard_normal((2, 6, 2, 2)))
    g4, b4 = put(backend, np.ones((1, 6, 1, 1)), np.zeros((1, 6, 1, 1)))
    with pytest.raises(ValueError, match="G: expected a positive integer dividing C=6"):
        spatial_groupnorm_forward(x4, g4, b4, 4, {})
