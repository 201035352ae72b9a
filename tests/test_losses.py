"""softmax and SVM losses through the layer harness (loop oracles, numerical gradients,
parity, dtypes), numerical stability, errors."""

import math

import numpy as np
import pytest

from portnn.layers import softmax_loss, svm_loss
from tests.helpers import put, to_np
from tests.layer_harness import DTYPES, check_layer


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


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,c", [(6, 5), (4, 3)])
@pytest.mark.parametrize("fn,oracle", [(softmax_loss, softmax_oracle), (svm_loss, svm_oracle)])
def test_loss_value_and_gradient(backend, fn, oracle, n, c, dtype):
    # The loss is a layer whose output is a Python float and whose cache is dx:
    # backward(dout, dx) = dout * dx, dout a random 0-d array.
    run = check_layer(backend, dtype, forward=fn, backward=lambda dout, dx: dout * dx, reference=oracle,
                      inputs=lambda rng: (rng.standard_normal((n, c)) * 2, rng.integers(0, c, size=n)))
    assert isinstance(run.out, float)
    if dtype == "float64":  # tighter than tolerance(): the loss value to 1e-12 absolute
        assert abs(run.out - oracle(*run.host)) < 1e-12


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
