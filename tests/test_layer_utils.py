"""Sandwich layers through the layer harness (plain-NumPy references, numerical gradients,
parity, non-contiguous inputs, dtypes) on every backend."""

import numpy as np
import pytest

from portnn import layer_utils as lu
from tests.helpers import put, to_np
from tests.layer_harness import DTYPES, check_layer

BN = {"mode": "train"}
CONV = {"stride": 1, "pad": 1}
POOL = {"pool_height": 2, "pool_width": 2, "stride": 2}


# -- plain NumPy references ------------------------------------------------------


def affine(x, w, b):
    return x.reshape(len(x), -1) @ w + b


def relu(a):
    return np.maximum(a, 0.0)


def normalize(a, g, b, axes, eps=1e-5):
    shape = [1] * a.ndim
    shape[1] = -1
    m, v = a.mean(axis=axes, keepdims=True), a.var(axis=axes, keepdims=True)
    return g.reshape(shape) * (a - m) / np.sqrt(v + eps) + b.reshape(shape)


def conv(x, w, b, stride=1, pad=1):
    F, _, HH, WW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    Ho, Wo = 1 + (xp.shape[2] - HH) // stride, 1 + (xp.shape[3] - WW) // stride
    out = np.empty((len(x), F, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            win = xp[:, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
            out[:, :, i, j] = np.tensordot(win, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return out


def pool(a, k=2):
    n, c, h, w = a.shape
    return a[:, :, :h // k * k, :w // k * k].reshape(n, c, h // k, k, w // k, k).max(axis=(3, 5))


def shapes(*shapes):
    return lambda rng: tuple(rng.standard_normal(s) for s in shapes)


def gains(rng, n):
    return rng.random(n) + 0.5


X2, W2, X4, W4 = (4, 5), (5, 6), (2, 3, 4, 4), (4, 3, 3, 3)
AFFINE_NORM_INPUTS = lambda rng: (*shapes(X2, W2, (6,))(rng), gains(rng, 6), rng.standard_normal(6))  # noqa: E731
CONV_NORM_INPUTS = lambda rng: (*shapes(X4, W4, (4,))(rng), gains(rng, 4), rng.standard_normal(4))  # noqa: E731

# name: (forward, backward, inputs, params (dicts passed after the arrays), NumPy reference)
CASES = {
    "affine_relu": (lu.affine_relu_forward, lu.affine_relu_backward, shapes(X2, W2, (6,)), [],
                    lambda x, w, b: relu(affine(x, w, b))),
    "affine_bn_relu": (lu.affine_bn_relu_forward, lu.affine_bn_relu_backward, AFFINE_NORM_INPUTS, [BN],
                       lambda x, w, b, g, be: relu(normalize(affine(x, w, b), g, be, (0,)))),
    "affine_ln_relu": (lu.affine_ln_relu_forward, lu.affine_ln_relu_backward, AFFINE_NORM_INPUTS, [{}],
                       lambda x, w, b, g, be: relu(normalize(affine(x, w, b), g, be, (1,)))),
    "conv_relu": (lu.conv_relu_forward, lu.conv_relu_backward, shapes(X4, W4, (4,)), [CONV],
                  lambda x, w, b: relu(conv(x, w, b))),
    "conv_relu_pool": (lu.conv_relu_pool_forward, lu.conv_relu_pool_backward, shapes(X4, W4, (4,)), [CONV, POOL],
                       lambda x, w, b: pool(relu(conv(x, w, b)))),
    "conv_bn_relu": (lu.conv_bn_relu_forward, lu.conv_bn_relu_backward, CONV_NORM_INPUTS, [CONV, BN],
                     lambda x, w, b, g, be: relu(normalize(conv(x, w, b), g, be, (0, 2, 3)))),
    "conv_bn_relu_pool": (lu.conv_bn_relu_pool_forward, lu.conv_bn_relu_pool_backward, CONV_NORM_INPUTS,
                          [CONV, BN, POOL], lambda x, w, b, g, be: pool(relu(normalize(conv(x, w, b), g, be, (0, 2, 3))))),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_sandwich(backend, name, dtype):
    fwd, bwd, inputs, params, reference = CASES[name]
    # grad_atol: the bias before a batchnorm has an exactly-zero gradient (numerically ~1e-11).
    # numerical_on="numpy": 2 forwards per input element of a conv are the cost; the parts are
    # checked numerically on each backend in their own tests.
    run = check_layer(backend, dtype, inputs=inputs, reference=reference, backward=bwd, seed=1, grad_atol=1e-8,
                      forward=lambda *a: fwd(*a, *[dict(p) for p in params]), numerical_on="numpy")
    assert bwd(run.dout, run.cache, need_dx=False)[0] is None


def test_aliases():
    assert lu.conv_batchnorm_relu_forward is lu.conv_bn_relu_forward
    assert lu.conv_batchnorm_relu_pool_backward is lu.conv_bn_relu_pool_backward


def test_conv_relu_pool_equals_the_explicit_sequence_on_ties(backend):
    """conv_relu_pool runs pool before relu; outputs and gradients must equal
    conv -> relu -> pool exactly, also with many tied and negative window maxima."""
    from portnn.layers import (
        conv_backward,
        conv_forward,
        max_pool_backward,
        max_pool_forward,
        relu_backward,
        relu_forward,
    )
    rng = np.random.default_rng(7)
    x = np.round(rng.standard_normal((3, 2, 6, 6)))  # rounded: ties and exact zeros
    w = np.round(rng.standard_normal((4, 2, 3, 3)))
    b = np.array([0.0, -2.0, 1.0, -50.0])  # the last filter is negative everywhere
    conv, pool = {"stride": 1, "pad": 1}, {"pool_height": 2, "pool_width": 2, "stride": 2}
    xb, wb, bb = put(backend, x, w, b)
    out, cache = lu.conv_relu_pool_forward(xb, wb, bb, conv, pool)
    a, c1 = conv_forward(xb, wb, bb, conv)
    r, c2 = relu_forward(a)
    ref, c3 = max_pool_forward(r, pool)
    np.testing.assert_array_equal(to_np(out), to_np(ref))
    dout = put(backend, np.round(rng.standard_normal(tuple(out.shape))))
    got = lu.conv_relu_pool_backward(dout, cache)
    expected = conv_backward(relu_backward(max_pool_backward(dout, c3), c2), c1)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(to_np(g), to_np(e))
