"""affine and relu layers: oracles, gradient checks, parity, errors, on every backend."""

import numpy as np
import pytest

from portnn.layers import affine_backward, affine_forward, relu_backward, relu_forward
from tests.helpers import assert_on_backend, numeric_grad, put, rel_error, to_np


def test_affine_forward_matches_oracle(backend, rng):
    x = rng.standard_normal((4, 2, 3))
    w = rng.standard_normal((6, 5))
    b = rng.standard_normal(5)
    out, _ = affine_forward(*put(backend, x, w, b))
    assert_on_backend(out, backend)
    expected = np.array([[sum(x[n].reshape(-1)[d] * w[d, m] for d in range(6)) + b[m]
                          for m in range(5)] for n in range(4)])
    np.testing.assert_allclose(to_np(out), expected, rtol=1e-12)


def test_affine_gradients(backend, rng):
    x = rng.standard_normal((3, 2, 2))
    w = rng.standard_normal((4, 5))
    b = rng.standard_normal(5)
    dout = rng.standard_normal((3, 5))
    xb, wb, bb = put(backend, x, w, b)
    _, cache = affine_forward(xb, wb, bb)
    dx, dw, db = affine_backward(put(backend, dout), cache)
    for g in (dx, dw, db):
        assert_on_backend(g, backend)
    def fwd(xa, wa, ba):
        return to_np(affine_forward(*put(backend, xa, wa, ba))[0])
    assert rel_error(to_np(dx), numeric_grad(lambda a: fwd(a, w, b), x, dout)) < 1e-7
    assert rel_error(to_np(dw), numeric_grad(lambda a: fwd(x, a, b), w, dout)) < 1e-7
    assert rel_error(to_np(db), numeric_grad(lambda a: fwd(x, w, a), b, dout)) < 1e-7


def test_affine_skip_dx(backend, rng):
    x, w, b, dout = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal(2), rng.standard_normal((3, 2))
    _, cache = affine_forward(*put(backend, x, w, b))
    dx, dw, _ = affine_backward(put(backend, dout), cache, need_dx=False)
    assert dx is None
    np.testing.assert_allclose(to_np(dw), x.T @ dout, rtol=1e-12)


def test_relu_forward_backward(backend, rng):
    x = rng.standard_normal((5, 6))
    dout = rng.standard_normal((5, 6))
    out, cache = relu_forward(put(backend, x))
    assert_on_backend(out, backend)
    np.testing.assert_array_equal(to_np(out), np.maximum(x, 0))
    dx = relu_backward(put(backend, dout), cache)
    np.testing.assert_array_equal(to_np(dx), dout * (x > 0))
    num = numeric_grad(lambda a: to_np(relu_forward(put(backend, a))[0]), x, dout)
    assert rel_error(to_np(dx), num) < 1e-7


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_affine_relu_parity_and_dtype(backend, rng, dtype):
    x, w, b = rng.standard_normal((8, 7)), rng.standard_normal((7, 3)), rng.standard_normal(3)
    out, _ = relu_forward(affine_forward(*put(backend, x, w, b, dtype=dtype))[0])
    assert out.dtype == backend.dtype(dtype)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(to_np(out), np.maximum(x @ w + b, 0), rtol=tol, atol=tol)


def test_affine_bad_inputs(backend, rng):
    x, w, b = put(backend, rng.standard_normal((4, 6)), rng.standard_normal((5, 3)), rng.standard_normal(3))
    with pytest.raises(ValueError, match=r"w: expected shape \(6, M\)"):
        affine_forward(x, w, b)
    w_ok = put(backend, rng.standard_normal((6, 3)))
    with pytest.raises(ValueError, match=r"b: expected shape \(3,\)"):
        affine_forward(x, w_ok, put(backend, np.zeros(4)))
    with pytest.raises(TypeError, match="x: expected a float32 or float64"):
        affine_forward(backend.asarray(np.ones((4, 6), dtype=np.int64)), w_ok, b)
    with pytest.raises(TypeError, match="w: expected dtype float64"):
        affine_forward(x, backend.asarray(np.ones((6, 3)), dtype="float32"), b)


def test_mixed_backends_rejected(backend, rng):
    import numpy as np  # host arrays are a different backend unless backend is numpy
    if backend.name == "numpy":
        pytest.skip("numpy arrays are this backend's own arrays")
    x = put(backend, rng.standard_normal((2, 3)))
    with pytest.raises(TypeError, match="different backends"):
        affine_forward(x, np.ones((3, 2)), np.ones(2))


def test_mixed_devices_rejected():
    from portnn.backends import BackendError, get_backend
    try:
        a, b = get_backend("array_api_strict"), get_backend("array_api_strict:device1")
    except BackendError as e:
        pytest.skip(str(e))
    x = a.asarray(np.ones((2, 3)))
    with pytest.raises(ValueError, match="different devices"):
        affine_forward(x, b.asarray(np.ones((3, 2))), b.asarray(np.ones(2)))
