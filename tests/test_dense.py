"""affine and relu layers on every backend: the layer harness (loop oracle, numerical
gradients, numpy parity, non-contiguous inputs, dtypes), need_dx, errors."""

import math

import numpy as np
import pytest

from portnn.layers import affine_backward, affine_forward, relu_backward, relu_forward
from tests.helpers import put, to_np, tolerance
from tests.layer_harness import DTYPES, check_layer


def affine_oracle(x, w, b):
    return np.array([[sum(x[n].reshape(-1)[d] * w[d, m] for d in range(w.shape[0])) + b[m]
                      for m in range(w.shape[1])] for n in range(x.shape[0])])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape,m", [((4, 2, 3), 5), ((3, 2, 2), 5), ((8, 7), 3)])
def test_affine(backend, dtype, x_shape, m):
    d = math.prod(x_shape[1:])
    check_layer(backend, dtype, forward=affine_forward, backward=affine_backward, reference=affine_oracle,
                inputs=lambda rng: (rng.standard_normal(x_shape), rng.standard_normal((d, m)),
                                    rng.standard_normal(m)))


def test_affine_skip_dx(backend, rng):
    x, w, b, dout = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal(2), rng.standard_normal((3, 2))
    _, cache = affine_forward(*put(backend, x, w, b))
    dx, dw, _ = affine_backward(put(backend, dout), cache, need_dx=False)
    assert dx is None
    np.testing.assert_allclose(to_np(dw), x.T @ dout, **tolerance("float64"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu(backend, dtype):
    run = check_layer(backend, dtype, inputs=lambda rng: rng.standard_normal((5, 6)),
                      forward=relu_forward, backward=relu_backward, reference=lambda x: np.maximum(x, 0))
    (x,), dout = run.host, to_np(run.dout)
    np.testing.assert_array_equal(to_np(run.out), np.maximum(x, 0))  # exact: a copy or a zero
    np.testing.assert_array_equal(to_np(run.grads[0]), dout * (x > 0))


def affine_relu_forward(x, w, b):
    a, c1 = affine_forward(x, w, b)
    out, c2 = relu_forward(a)
    return out, (c1, c2)


def affine_relu_backward(dout, cache):
    return affine_backward(relu_backward(dout, cache[1]), cache[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_then_relu(backend, dtype):
    check_layer(backend, dtype, forward=affine_relu_forward, backward=affine_relu_backward,
                reference=lambda x, w, b: np.maximum(x @ w + b, 0),
                inputs=lambda rng: (rng.standard_normal((8, 7)), rng.standard_normal((7, 3)), rng.standard_normal(3)))


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
