"""Property-based tests (hypothesis): random shapes, strides, pads and pool
settings. Profile "ci" (default, 30 examples per property) or
HYPOTHESIS_PROFILE=deep for 1000."""

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st

from portnn import layers as L  # noqa: E402
from portnn.backends import get_backend  # noqa: E402
from portnn.gradient_check import eval_numerical_gradient_array  # noqa: E402
from tests.helpers import to_np  # noqa: E402

NP = get_backend("numpy")
STRICT = get_backend("array_api_strict")


@st.composite
def conv_case(draw):
    n, c, f = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    hh, ww = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    pad, stride = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    h = draw(st.integers(max(1, hh - 2 * pad), 7))
    w = draw(st.integers(max(1, ww - 2 * pad), 7))
    seed = draw(st.integers(0, 2**16))
    return (n, c, h, w), (f, c, hh, ww), stride, pad, seed


@st.composite
def pool_case(draw):
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw, stride = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(ph, 8)), draw(st.integers(pw, 8))
    ties = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return (n, c, h, w), ph, pw, stride, ties, seed


def grad_close(analytic, numeric):
    """Norm-wise relative error below 1e-7, with an absolute floor of 1e-8 for
    gradients that are nearly zero (central differences with h=1e-6 resolve ~1e-9)."""
    diff = np.linalg.norm(analytic - numeric)
    return diff <= 1e-7 * (np.linalg.norm(analytic) + np.linalg.norm(numeric)) + 1e-8


def _arrays(seed, *shapes):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in shapes]


@given(conv_case())
def test_conv_shape_formula_and_strict_parity(case):
    xs, ws, stride, pad, seed = case
    x, w, b = _arrays(seed, xs, ws, (ws[0],))
    param = {"stride": stride, "pad": pad}
    out, cache = L.conv_forward(NP.asarray(x), NP.asarray(w), NP.asarray(b), param)
    ho = 1 + (xs[2] + 2 * pad - ws[2]) // stride
    wo = 1 + (xs[3] + 2 * pad - ws[3]) // stride
    assert out.shape == (xs[0], ws[0], ho, wo)
    dout = np.random.default_rng(seed + 1).standard_normal(out.shape)
    grads = L.conv_backward(NP.asarray(dout), cache)
    sout, scache = L.conv_forward(STRICT.asarray(x), STRICT.asarray(w), STRICT.asarray(b), param)
    sgrads = L.conv_backward(STRICT.asarray(dout), scache)
    np.testing.assert_allclose(to_np(sout), out, rtol=1e-12, atol=1e-12)
    for g, sg in zip(grads, sgrads):
        np.testing.assert_allclose(to_np(sg), g, rtol=1e-12, atol=1e-12)


@given(conv_case())
def test_conv_gradient_check(case):
    xs, ws, stride, pad, seed = case
    x, w, b = _arrays(seed, xs, ws, (ws[0],))
    param = {"stride": stride, "pad": pad}
    out, cache = L.conv_forward(x, w, b, param)
    dout = np.random.default_rng(seed + 1).standard_normal(out.shape)
    dx, dw, db = L.conv_backward(dout, cache)
    assert grad_close(dx, eval_numerical_gradient_array(lambda a: L.conv_forward(a, w, b, param)[0], x, dout, h=1e-6))
    assert grad_close(dw, eval_numerical_gradient_array(lambda a: L.conv_forward(x, a, b, param)[0], w, dout, h=1e-6))


@given(pool_case())
def test_pool_shape_first_max_and_parity(case):
    xs, ph, pw, stride, ties, seed = case
    (x,) = _arrays(seed, xs)
    if ties:  # many equal maxima, as after a ReLU on rounded data
        x = np.maximum(np.round(x), 0.0)
    param = {"pool_height": ph, "pool_width": pw, "stride": stride}
    out, cache = L.max_pool_forward(x, param)
    ho, wo = 1 + (xs[2] - ph) // stride, 1 + (xs[3] - pw) // stride
    assert out.shape == (xs[0], xs[1], ho, wo)
    dout = np.random.default_rng(seed + 1).standard_normal(out.shape)
    dx = L.max_pool_backward(dout, cache)
    # each window's gradient goes to exactly one element (its first maximum)
    np.testing.assert_allclose(dx.sum(), dout.sum(), rtol=1e-10, atol=1e-10)
    for i in range(ho):
        for j in range(wo):
            win = x[:, :, i * stride:i * stride + ph, j * stride:j * stride + pw].reshape(xs[0], xs[1], -1)
            np.testing.assert_array_equal(out[:, :, i, j], win.max(axis=2))
    sout, scache = L.max_pool_forward(STRICT.asarray(x), param)
    np.testing.assert_array_equal(to_np(sout), out)
    np.testing.assert_array_equal(to_np(L.max_pool_backward(STRICT.asarray(dout), scache)), dx)


@given(st.integers(1, 5), st.integers(1, 6), st.integers(0, 2**16))
def test_batchnorm_layernorm_gradient_check(n, d, seed):
    n = max(n, 2)
    x, g, b, dout = _arrays(seed, (n, d), (d,), (d,), (n, d))
    for fwd, bwd, p in ((L.batchnorm_forward, L.batchnorm_backward, {"mode": "train"}),
                        (L.layernorm_forward, L.layernorm_backward, {})):
        out, cache = fwd(x, g, b, dict(p))
        dx, dg, db = bwd(dout, cache)
        num = eval_numerical_gradient_array(lambda a, fwd=fwd, p=p: fwd(a, g, b, dict(p))[0], x, dout, h=1e-6)
        assert grad_close(dx, num)
