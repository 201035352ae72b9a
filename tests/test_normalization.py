"""Batch / layer / spatial batch / group norm: one core, each layer through the layer
harness (loop oracles, numerical gradients, parity, non-contiguous inputs, dtypes)."""

import numpy as np
import pytest

from portnn.layers import (
    batchnorm_backward,
    batchnorm_backward_alt,
    batchnorm_forward,
    layernorm_backward,
    layernorm_forward,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
    spatial_groupnorm_backward,
    spatial_groupnorm_forward,
)
from tests.helpers import assert_on_backend, put, to_np, tolerance
from tests.layer_harness import DTYPES, check_layer


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


def normal(*shape, scale=1.0, shift=0.0):
    return lambda rng: rng.standard_normal(shape) * scale + shift


def inputs(x, *params):
    """Input generator: x, then the parameter arrays (each a generator too)."""
    return lambda rng: (x(rng), *(p(rng) for p in params))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bwd", [batchnorm_backward, batchnorm_backward_alt])
@pytest.mark.parametrize("x_shape,scale,shift", [((7, 4), 3.0, 2.0), ((5, 3), 1.0, 0.0), ((16, 8), 1.0, 0.0)])
def test_batchnorm_train(backend, dtype, bwd, x_shape, scale, shift):
    d = x_shape[1]
    check_layer(backend, dtype, forward=lambda x, g, b: batchnorm_forward(x, g, b, {"mode": "train"}),
                backward=bwd, reference=bn_oracle,
                inputs=inputs(normal(*x_shape, scale=scale, shift=shift), normal(d), normal(d)))


def test_batchnorm_running_stats_and_test_mode(backend, rng):
    x = rng.standard_normal((7, 4)) * 3 + 2
    g, b = rng.standard_normal(4), rng.standard_normal(4)
    bn_param = {"mode": "train"}
    batchnorm_forward(*put(backend, x, g, b), bn_param)
    assert_on_backend(bn_param["running_mean"], backend)
    np.testing.assert_allclose(to_np(bn_param["running_mean"]), 0.1 * x.mean(0), **tolerance("float64"))
    np.testing.assert_allclose(to_np(bn_param["running_var"]), 0.1 * x.var(0), **tolerance("float64"))
    bn_param["mode"] = "test"
    out_t, _ = batchnorm_forward(*put(backend, x, g, b), bn_param)
    expected = g * (x - 0.1 * x.mean(0)) / np.sqrt(0.1 * x.var(0) + 1e-5) + b
    np.testing.assert_allclose(to_np(out_t), expected, **tolerance("float64"))


def bn_test_mode_forward(x, g, b, rm, rv):
    return batchnorm_forward(x, g, b, {"mode": "test", "running_mean": rm, "running_var": rv})


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_test_mode(backend, dtype):
    check_layer(backend, dtype, forward=bn_test_mode_forward, backward=batchnorm_backward, wrt=(0, 1, 2),
                reference=lambda x, g, b, rm, rv: g * (x - rm) / np.sqrt(rv + 1e-5) + b,
                inputs=lambda rng: (rng.standard_normal((5, 3)), rng.standard_normal(3), rng.standard_normal(3),
                                    rng.standard_normal(3), rng.random(3) + 0.5))


@pytest.mark.parametrize("dtype", DTYPES)
def test_layernorm(backend, dtype):
    check_layer(backend, dtype, forward=lambda x, g, b: layernorm_forward(x, g, b, {}),
                backward=layernorm_backward, reference=ln_oracle,
                inputs=inputs(normal(4, 6, scale=2.0), normal(6), normal(6)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_spatial_batchnorm(backend, dtype):
    check_layer(backend, dtype, forward=lambda x, g, b: spatial_batchnorm_forward(x, g, b, {"mode": "train"}),
                backward=spatial_batchnorm_backward, reference=sbn_oracle,
                inputs=inputs(normal(3, 2, 4, 5, scale=2.0, shift=1.0), normal(2), normal(2)))


def test_spatial_batchnorm_running_mean(backend, rng):
    x = rng.standard_normal((3, 2, 4, 5)) * 2 + 1
    p = {"mode": "train"}
    spatial_batchnorm_forward(*put(backend, x, rng.standard_normal(2), rng.standard_normal(2)), p)
    np.testing.assert_allclose(to_np(p["running_mean"]), 0.1 * x.mean((0, 2, 3)), **tolerance("float64"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("G", [1, 2, 6])
def test_spatial_groupnorm(backend, dtype, G):
    check_layer(backend, dtype, forward=lambda x, g, b: spatial_groupnorm_forward(x, g, b, G, {}),
                backward=spatial_groupnorm_backward, reference=lambda x, g, b: gn_oracle(x, g, b, G),
                inputs=inputs(normal(2, 6, 3, 2, scale=2.0, shift=1.0), normal(1, 6, 1, 1), normal(1, 6, 1, 1)))


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
