"""softmax and SVM losses against loop oracles, gradient checks, errors."""

import math

import numpy as np
import pytest

from portnn.layers import softmax_loss, svm_loss
from tests.helpers import assert_on_backend, numeric_grad, put, rel_error, to_np


def softmax_oracle(x, y):
    loss = 0.0
    for i in range(x.shape[0]):
        z = x[i] - x[i].max()
        loss += -(z[y[i]] - math.log(sum(math.exp(v) for v in z)))
    return loss / x.shape[0]


def svm_oracle(x, y):
    loss = 0.0
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            if j != y[i]:
                loss += max(0.0, x[i, j] - x[i, y[i]] + 1.0)
    return loss / x.shape[0]


@pytest.mark.parametrize("fn,oracle", [(softmax_loss, softmax_oracle), (svm_loss, svm_oracle)])
def test_loss_value_and_gradient(backend, rng, fn, oracle):
    x = rng.standard_normal((6, 5)) * 2
    y = rng.integers(0, 5, size=6)
    loss, dx = fn(*put(backend, x, y))
    assert isinstance(loss, float)
    assert_on_backend(dx, backend)
    assert abs(loss - oracle(x, y)) < 1e-12
    num = numeric_grad(lambda a: fn(*put(backend, a, y))[0], x)
    assert rel_error(to_np(dx), num) < 1e-7


def test_softmax_initial_loss_is_log_c(backend, rng):
    x = rng.standard_normal((200, 10)) * 1e-4
    y = rng.integers(0, 10, size=200)
    loss, _ = softmax_loss(*put(backend, x, y))
    assert abs(loss - math.log(10)) < 1e-3


def test_softmax_large_scores_stable(backend):
    x = np.array([[1000.0, 0.0, -1000.0]])
    loss, dx = softmax_loss(*put(backend, x, np.array([0])))
    assert loss == 0.0 and np.all(np.isfinite(to_np(dx)))


@pytest.mark.parametrize("fn", [softmax_loss, svm_loss])
def test_float32_stays_float32(backend, rng, fn):
    x = rng.standard_normal((4, 3))
    _, dx = fn(*put(backend, x, rng.integers(0, 3, size=4), dtype="float32"))
    assert dx.dtype == backend.dtype("float32")


@pytest.mark.parametrize("fn", [softmax_loss, svm_loss])
def test_bad_labels(backend, rng, fn):
    x = put(backend, rng.standard_normal((4, 3)))
    with pytest.raises(ValueError, match=r"y: labels must lie in \[0, 3\), got values in \[0, 3\]"):
        fn(x, backend.asarray(np.array([0, 1, 2, 3])))
    with pytest.raises(ValueError, match=r"y: labels must lie in \[0, 3\), got values in \[-1, 1\]"):
        fn(x, backend.asarray(np.array([0, 1, -1, 0])))
    with pytest.raises(TypeError, match="y: expected integer labels, got dtype float64"):
        fn(x, backend.asarray(np.array([0.0, 1.0, 2.0, 0.0])))
    with pytest.raises(ValueError, match=r"y: expected shape \(4,\)"):
        fn(x, backend.asarray(np.array([0, 1])))
