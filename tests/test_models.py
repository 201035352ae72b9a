"""FullyConnectedNet / TwoLayerNet: seeded init, gradients, parity and errors on every backend."""

import math

import numpy as np
import pytest

from portnn.backends import get_backend
from portnn.gradient_check import eval_numerical_gradient
from portnn.models import FullyConnectedNet, TwoLayerNet
from tests.helpers import assert_on_backend, grad_ok, loss_of_param, put, to_np

CONFIGS = [
    dict(),
    dict(normalization="batchnorm"),
    dict(normalization="layernorm"),
    dict(dropout_keep_ratio=0.6),
    dict(normalization="batchnorm", dropout_keep_ratio=0.7),
]


def small_net(backend, **kw):
    return FullyConnectedNet([5, 4], input_dim=6, num_classes=3, weight_scale=0.5, reg=0.1,
                             dtype="float64", seed=3, backend=backend, **kw)


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()) or "plain")
def test_fcn_gradient_check(backend, rng, kw):
    model = small_net(backend, **kw)
    X, y = put(backend, rng.standard_normal((4, 6)), rng.integers(0, 3, size=4))
    loss, grads = model.loss(X, y)
    assert isinstance(loss, float)
    for name in sorted(model.params):
        assert_on_backend(grads[name], backend)
        num = eval_numerical_gradient(loss_of_param(model, name, X, y), model.params[name], h=1e-6)
        assert grad_ok(grads[name], num), name


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()) or "plain")
def test_fcn_same_seed_same_params_and_loss_everywhere(backend, rng, kw):
    ref = small_net("numpy", **kw)
    model = small_net(backend, **kw)
    for name, p in model.params.items():
        assert_on_backend(p, backend)
        np.testing.assert_array_equal(to_np(p), to_np(ref.params[name]))  # bit-identical init
    Xh, yh = rng.standard_normal((4, 6)), rng.integers(0, 3, size=4)
    loss, grads = model.loss(*put(backend, Xh, yh))
    loss_ref, grads_ref = ref.loss(*put(get_backend("numpy"), Xh, yh))
    assert abs(loss - loss_ref) < 1e-12  # dropout masks are identical too
    for name in grads:
        np.testing.assert_allclose(to_np(grads[name]), grads_ref[name], rtol=1e-10, atol=1e-12)


def test_initial_loss_and_regularisation(backend, rng):
    X, y = put(backend, rng.standard_normal((50, 20)), rng.integers(0, 10, size=50))
    model = FullyConnectedNet([30], input_dim=20, weight_scale=1e-3, dtype="float64", seed=0, backend=backend)
    loss0, _ = model.loss(X, y)
    assert abs(loss0 - math.log(10)) < 0.01
    model.reg = 2.0
    loss1, grads = model.loss(X, y)
    penalty = 0.5 * 2.0 * sum(float(np.sum(to_np(model.params[k]) ** 2)) for k in ("W1", "W2"))
    assert abs((loss1 - loss0) - penalty) < 1e-12


def test_scores_and_float32(backend, rng):
    model = FullyConnectedNet([8], input_dim=6, num_classes=4, seed=1, backend=backend)
    scores = model.loss(put(backend, rng.standard_normal((5, 6)), dtype="float32"))
    assert_on_backend(scores, backend)
    assert scores.shape == (5, 4) and scores.dtype == backend.dtype("float32")


def test_dtype_spellings(backend):
    import numpy
    for dt in ("float64", numpy.float64, numpy.dtype("float64"), backend.xp.float64):
        m = TwoLayerNet(input_dim=4, hidden_dim=3, num_classes=2, dtype=dt, seed=0, backend=backend)
        assert m.params["W1"].dtype == backend.xp.float64


def test_batchnorm_running_stats_in_buffers(backend, rng):
    model = small_net(backend, normalization="batchnorm")
    model.loss(*put(backend, rng.standard_normal((4, 6)), rng.integers(0, 3, size=4)))
    bufs = model.buffers()
    assert set(bufs) == {"bn1.running_mean", "bn1.running_var", "bn2.running_mean", "bn2.running_var"}
    for v in bufs.values():
        assert_on_backend(v, backend)


def test_dropout_masks_change_per_step_and_are_seeded(backend, rng):
    model = small_net(backend, dropout_keep_ratio=0.5)
    X, y = put(backend, rng.standard_normal((4, 6)), rng.integers(0, 3, size=4))
    a, _ = model.loss(X, y)
    assert model.loss(X, y)[0] == a  # same step -> same masks (gradient checks rely on it)
    model.advance_rng()
    assert model.loss(X, y)[0] != a


def test_model_errors_leave_params_untouched(backend, rng):
    with pytest.raises(ValueError, match="dropout_keep_ratio"):
        FullyConnectedNet([4], dropout_keep_ratio=0.0, backend=backend)
    with pytest.raises(ValueError, match="dropout_keep_ratio"):
        FullyConnectedNet([4], dropout_keep_ratio=1.5, backend=backend)
    with pytest.raises(ValueError, match="normalization: expected one of"):
        FullyConnectedNet([4], normalization="groupnorm", backend=backend)
    with pytest.raises(ValueError, match="dtype"):
        FullyConnectedNet([4], dtype="int32", backend=backend)
    model = small_net(backend)
    before = {k: to_np(v).copy() for k, v in model.params.items()}
    X = put(backend, rng.standard_normal((4, 6)))
    with pytest.raises(ValueError, match=r"y: labels must lie in \[0, 3\)"):
        model.loss(X, backend.asarray(np.array([0, 1, 2, 3])))
    with pytest.raises(TypeError, match="y: expected integer labels"):
        model.loss(X, put(backend, np.zeros(4)))
    with pytest.raises(ValueError, match=r"X: expected shape \(N, 6\)"):
        model.loss(put(backend, rng.standard_normal((4, 5))), backend.asarray(np.zeros(4, dtype=int)))
    with pytest.raises(TypeError, match="X: expected dtype"):
        model.loss(put(backend, rng.standard_normal((4, 6)), dtype="float32"))
    if backend.name != "numpy":
        with pytest.raises(TypeError, match="X: expected an array of the"):
            model.loss(rng.standard_normal((4, 6)), np.zeros(4, dtype=int))
    for k, v in model.params.items():
        np.testing.assert_array_equal(to_np(v), before[k])


def test_unknown_backend_error():
    from portnn.backends import BackendError
    with pytest.raises(BackendError, match="unknown backend 'mxnet'.*available here"):
        FullyConnectedNet([4], backend="mxnet")
