"""Sandwich layers: each backward checked numerically on every backend."""

import numpy as np
import pytest

from portnn import layer_utils as lu
from tests.helpers import assert_on_backend, grad_ok, numeric_grad, put, to_np

BN = {"mode": "train"}
CONV = {"stride": 1, "pad": 1}
POOL = {"pool_height": 2, "pool_width": 2, "stride": 2}


def cases(rng):
    x2 = rng.standard_normal((4, 5))
    x4 = rng.standard_normal((2, 3, 4, 4))
    w2, b2 = rng.standard_normal((5, 6)), rng.standard_normal(6)
    w4, b4 = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    g6, be6 = rng.random(6) + 0.5, rng.standard_normal(6)
    g4, be4 = rng.random(4) + 0.5, rng.standard_normal(4)
    return {
        "affine_relu": (lu.affine_relu_forward, lu.affine_relu_backward, [x2, w2, b2], []),
        "affine_bn_relu": (lu.affine_bn_relu_forward, lu.affine_bn_relu_backward, [x2, w2, b2, g6, be6], [BN]),
        "affine_ln_relu": (lu.affine_ln_relu_forward, lu.affine_ln_relu_backward, [x2, w2, b2, g6, be6], [{}]),
        "conv_relu": (lu.conv_relu_forward, lu.conv_relu_backward, [x4, w4, b4], [CONV]),
        "conv_relu_pool": (lu.conv_relu_pool_forward, lu.conv_relu_pool_backward, [x4, w4, b4], [CONV, POOL]),
        "conv_bn_relu": (lu.conv_bn_relu_forward, lu.conv_bn_relu_backward, [x4, w4, b4, g4, be4], [CONV, BN]),
        "conv_bn_relu_pool": (lu.conv_bn_relu_pool_forward, lu.conv_bn_relu_pool_backward,
                              [x4, w4, b4, g4, be4], [CONV, BN, POOL]),
    }


@pytest.mark.parametrize("name", list(cases(np.random.default_rng(0))))
def test_sandwich_gradients(backend, name):
    rng = np.random.default_rng(1)
    fwd, bwd, arrays, params = cases(rng)[name]
    out, cache = fwd(*put(backend, *arrays), *[dict(p) for p in params])
    assert_on_backend(out, backend)
    dout = rng.standard_normal(tuple(out.shape))
    grads = bwd(put(backend, dout), cache)
    assert len(grads) == len(arrays)
    for k, g in enumerate(grads):
        def f(a, k=k):
            args = list(arrays)
            args[k] = a
            return to_np(fwd(*put(backend, *args), *[dict(p) for p in params])[0])
        assert grad_ok(g, numeric_grad(f, arrays[k], dout)), (name, k)
    assert bwd(put(backend, dout), cache, need_dx=False)[0] is None


def test_aliases():
    assert lu.conv_batchnorm_relu_forward is lu.conv_bn_relu_forward
    assert lu.conv_batchnorm_relu_pool_backward is lu.conv_bn_relu_pool_backward


def test_conv_relu_pool_equals_the_explicit_sequence_on_ties(backend):
    """conv_relu_pool runs pool before relu; outputs and gradients must equal
    conv -> relu -> pool exactly, also with many tied and negative window maxima."""
    from portnn.layers import (conv_backward, conv_forward, max_pool_backward, max_pool_forward,
                               relu_backward, relu_forward)
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
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(to_np(g), to_np(e))
