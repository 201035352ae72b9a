"""ThreeLayerConvNet: initial loss, gradients, parity, regularisation, overfitting."""

import math

import numpy as np
import pytest

from portnn import Solver
from portnn.backends import get_backend
from portnn.data import load_digits
from portnn.gradient_check import eval_numerical_gradient, rel_error
from portnn.models import ThreeLayerConvNet
from tests.helpers import assert_on_backend, loss_of_param, put, to_np


def test_initial_loss_is_log_c(backend, rng):
    model = ThreeLayerConvNet(input_dim=(3, 16, 16), num_filters=8, filter_size=5, hidden_dim=20,
                              seed=0, dtype="float64", backend=backend)
    X, y = put(backend, rng.standard_normal((20, 3, 16, 16)), rng.integers(0, 10, size=20))
    loss, grads = model.loss(X, y)
    assert abs(loss - math.log(10)) < 0.01
    assert set(grads) == {"W1", "b1", "W2", "b2", "W3", "b3"}
    assert tuple(model.params["W2"].shape) == (8 * 8 * 8, 20)


def test_gradient_check_and_parity(backend, rng):
    kw = dict(input_dim=(2, 6, 5), num_filters=3, filter_size=3, hidden_dim=7, num_classes=4,
              weight_scale=0.3, reg=0.05, seed=1, dtype="float64")
    model = ThreeLayerConvNet(backend=backend, **kw)
    Xh, yh = rng.standard_normal((3, 2, 6, 5)), rng.integers(0, 4, size=3)
    X, y = put(backend, Xh, yh)
    loss, grads = model.loss(X, y)
    for name in sorted(model.params):
        assert_on_backend(grads[name], backend)
        num = eval_numerical_gradient(loss_of_param(model, name, X, y), model.params[name], h=1e-6)
        assert rel_error(num, grads[name]) < 1e-6, name
    ref = ThreeLayerConvNet(backend="numpy", **kw)
    loss_ref, grads_ref = ref.loss(*put(get_backend("numpy"), Xh, yh))
    assert abs(loss - loss_ref) < 1e-12
    for name in grads:
        np.testing.assert_allclose(to_np(grads[name]), grads_ref[name], rtol=1e-10, atol=1e-13)


def test_regularisation_term(rng):
    X, y = rng.standard_normal((4, 1, 8, 8)), rng.integers(0, 10, size=4)
    m = ThreeLayerConvNet(input_dim=(1, 8, 8), num_filters=4, filter_size=3, hidden_dim=10, seed=0,
                          weight_scale=0.1, dtype="float64")
    l0, _ = m.loss(X, y)
    m.reg = 0.3
    l1, g1 = m.loss(X, y)
    penalty = 0.15 * sum(float(np.sum(m.params[k] ** 2)) for k in ("W1", "W2", "W3"))
    assert abs(l1 - l0 - penalty) < 1e-12


def test_overfits_50_digits(backend):
    d = load_digits(flatten=False)
    small = {"X_train": d["X_train"][:50], "y_train": d["y_train"][:50],
             "X_val": d["X_val"][:50], "y_val": d["y_val"][:50]}
    model = ThreeLayerConvNet(input_dim=(1, 8, 8), num_filters=8, filter_size=3, hidden_dim=50,
                              weight_scale=0.05, seed=0, backend=backend)
    solver = Solver(model, small, update_rule="adam", optim_config={"learning_rate": 1e-2},
                    batch_size=25, num_epochs=40, verbose=False, seed=0)
    solver.train()
    assert solver.train_acc_history[-1] == 1.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="input_dim"):
        ThreeLayerConvNet(input_dim=(3, 32))
    with pytest.raises(ValueError, match="num_filters"):
        ThreeLayerConvNet(num_filters=0)
    with pytest.raises(ValueError, match="filter_size"):
        ThreeLayerConvNet(input_dim=(1, 2, 2), filter_size=2)
