"""Numerical gradient utilities on every backend: accuracy, in-place restore, placement."""

import array_api_compat as aac
import numpy as np
import pytest

from portnn.backends import get_backend
from portnn.gradient_check import (
    directional_gradient_check,
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    rel_error,
)
from tests.helpers import assert_on_backend, put, to_np


def _other_backend_array(backend, a):
    spec = "array_api_strict:device1"
    if backend.name == "array_api_strict" and str(backend.device) == str(get_backend(spec).device):
        spec = "numpy"
    return get_backend(spec).asarray(a, dtype="float64")


# -- eval_numerical_gradient --------------------------------------------------------------


def test_numerical_gradient_of_cubic_sum(backend, rng):
    xp = backend.xp
    x0 = rng.uniform(0.5, 2.0, size=(3, 4)) * rng.choice([-1.0, 1.0], size=(3, 4))
    x = put(backend, x0)
    grad = eval_numerical_gradient(lambda a: xp.sum(a**3), x)
    assert_on_backend(grad, backend)
    assert grad.dtype == xp.float64 and tuple(grad.shape) == (3, 4)
    assert rel_error(grad, 3 * x0**2) < 1e-7


def test_numerical_gradient_restores_x_bit_exactly(backend, rng):
    xp = backend.xp
    x0 = rng.standard_normal((2, 3, 2)) * 1e3 + 1.0 / 3.0  # values h cannot round-trip exactly
    x = put(backend, x0)
    before = to_np(x).copy()
    seen = []

    mutable = aac.is_writeable_array(x)

    def f(a):
        # Mutable arrays: f gets the caller's array, perturbed in place (so an f that
        # reads it elsewhere works). Immutable ones (JAX): a new perturbed array.
        assert (a is x) == mutable
        seen.append(float(xp.sum(a)))
        return float(xp.sum(a * a))  # a Python float is accepted too

    grad = eval_numerical_gradient(f, x)
    np.testing.assert_array_equal(to_np(x), before)
    assert len(seen) == 2 * x0.size
    assert rel_error(grad, 2 * x0) < 1e-5  # sum(x*x) ~ 1e7: rounding dominates the difference


def test_numerical_gradient_restores_x_when_f_raises(backend, rng):
    x0 = rng.standard_normal((3,))
    x = put(backend, x0)
    before = to_np(x).copy()

    def f(a):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        eval_numerical_gradient(f, x)
    np.testing.assert_array_equal(to_np(x), before)


def test_numerical_gradient_float32_keeps_dtype(backend, rng):
    xp = backend.xp
    x = put(backend, rng.uniform(1, 2, size=(4,)), dtype="float32")
    before = to_np(x).copy()
    grad = eval_numerical_gradient(lambda a: xp.sum(a), x, h=1e-2)
    assert grad.dtype == xp.float32
    assert_on_backend(grad, backend)
    np.testing.assert_allclose(to_np(grad), np.ones(4), rtol=1e-3)
    np.testing.assert_array_equal(to_np(x), before)


def test_numerical_gradient_zero_dim_and_verbose(backend, capsys):
    xp = backend.xp
    x = xp.asarray(1.5, dtype=xp.float64, device=backend.device)
    grad = eval_numerical_gradient(lambda a: a * a, x, verbose=True)
    assert tuple(grad.shape) == ()
    assert abs(float(to_np(grad)) - 3.0) < 1e-8
    assert "()" in capsys.readouterr().out


def test_numerical_gradient_bad_inputs(backend):
    with pytest.raises(TypeError, match="x"):
        eval_numerical_gradient(lambda a: 0.0, [1.0, 2.0])
    with pytest.raises(TypeError, match="float32 or float64"):
        eval_numerical_gradient(lambda a: 0.0, put(backend, np.arange(3)))
    x = put(backend, np.ones(3))
    with pytest.raises(ValueError, match="scalar"):
        eval_numerical_gradient(lambda a: a * 2.0, x)
    np.testing.assert_array_equal(to_np(x), np.ones(3))


# -- eval_numerical_gradient_array --------------------------------------------------------


def test_numerical_gradient_array_matrix_product(backend, rng):
    xp = backend.xp
    a0, b0, df0 = rng.standard_normal((4, 3)), rng.standard_normal((3, 5)), rng.standard_normal((4, 5))
    a, b, df = put(backend, a0, b0, df0)
    da = eval_numerical_gradient_array(lambda t: xp.matmul(t, b), a, df)
    db = eval_numerical_gradient_array(lambda t: xp.matmul(a, t), b, df)
    for g, ref, shape in ((da, df0 @ b0.T, (4, 3)), (db, a0.T @ df0, (3, 5))):
        assert_on_backend(g, backend)
        assert g.dtype == xp.float64 and tuple(g.shape) == shape
        assert rel_error(g, ref) < 1e-8
    np.testing.assert_array_equal(to_np(a), a0)
    np.testing.assert_array_equal(to_np(b), b0)


def test_numerical_gradient_array_f_returning_x_itself(backend, rng):
    # f(x) = x aliases the perturbed array; the outputs must be copied before the next write.
    x0, df0 = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    x, df = put(backend, x0, df0)
    grad = eval_numerical_gradient_array(lambda t: t, x, df)
    assert rel_error(grad, df0) < 1e-8
    grad_np_df = eval_numerical_gradient_array(lambda t: t, x, df0)  # df given on the host
    assert rel_error(grad_np_df, df0) < 1e-8
    np.testing.assert_array_equal(to_np(x), x0)


def test_numerical_gradient_array_df_shape_mismatch(backend, rng):
    x = put(backend, rng.standard_normal((2, 3)))
    before = to_np(x).copy()
    with pytest.raises(ValueError, match="df"):
        eval_numerical_gradient_array(lambda t: t, x, np.ones((3, 2)))
    np.testing.assert_array_equal(to_np(x), before)


# -- rel_error ----------------------------------------------------------------------------


def test_rel_error_basics(backend, rng):
    a0 = rng.standard_normal((3, 4))
    a = put(backend, a0)
    e = rel_error(a, a)
    assert e == 0.0 and type(e) is float
    assert rel_error(a, a0) == 0.0  # backend array against NumPy
    assert rel_error(put(backend, np.zeros(3)), np.zeros(3)) == 0.0
    assert abs(rel_error(1.0, 1.1) - 0.1 / 2.1) < 1e-15
    assert abs(rel_error(put(backend, np.array([1.0, 2.0])), np.array([1.0, 3.0])) - 0.2) < 1e-15
    # Tiny absolute differences near zero are measured against the 1e-8 floor.
    assert abs(rel_error(np.array([1e-12]), np.array([0.0])) - 1e-4) < 1e-15
    assert np.isnan(rel_error(put(backend, np.array([np.nan, 1.0])), np.array([0.0, 1.0])))
    assert rel_error(put(backend, np.zeros((0, 3))), np.zeros((0, 3))) == 0.0
    with pytest.raises(ValueError, match="broadcast"):
        rel_error(a, np.zeros((2, 2)))


def test_rel_error_float32_input(backend):
    a = put(backend, np.array([1.0, 2.0]), dtype="float32")
    assert rel_error(a, np.array([1.0, 2.0])) == 0.0


# -- directional_gradient_check -----------------------------------------------------------


def _quadratic_model(backend, rng):
    """loss(W, b) = 0.5 * sum((X @ W + b)**2) + sum(W**3) with its analytic gradients."""
    xp = backend.xp
    X = put(backend, rng.standard_normal((6, 4)))
    params = {"W": put(backend, rng.standard_normal((4, 3))), "b": put(backend, rng.standard_normal((3,)))}

    def loss(p):
        s = xp.matmul(X, p["W"]) + p["b"]
        return 0.5 * xp.sum(s * s) + xp.sum(p["W"] ** 3)

    def grads(p):
        s = xp.matmul(X, p["W"]) + p["b"]
        return {"W": xp.matmul(xp.matrix_transpose(X), s) + 3.0 * p["W"] ** 2, "b": xp.sum(s, axis=0)}

    return params, loss, grads


def test_directional_check_small_on_correct_gradient(backend, rng):
    params, loss, grads = _quadratic_model(backend, rng)
    originals = dict(params)
    host_before = {k: to_np(v).copy() for k, v in params.items()}
    calls = []

    def f(p):
        calls.append(1)
        return loss(p)

    err = directional_gradient_check(f, params, grads(params))
    assert type(err) is float
    assert err < 1e-7
    assert len(calls) == 2  # two forward passes, whatever the number of parameters
    # The dict holds the very same (unmodified) arrays again.
    assert all(params[k] is originals[k] for k in originals) and set(params) == set(originals)
    for k, v in params.items():
        np.testing.assert_array_equal(to_np(v), host_before[k])
    # grads may be a callable evaluated at the unperturbed params; same seed -> same result.
    assert directional_gradient_check(loss, params, grads, seed=0) == err
    assert directional_gradient_check(loss, params, grads, seed=1) < 1e-7


def test_directional_check_closure_reading_the_dict(backend, rng):
    # The model pattern: f ignores its argument and reads the params dict it owns.
    params, loss, grads = _quadratic_model(backend, rng)
    err = directional_gradient_check(lambda _: float(loss(params)), params, grads(params), seed=3)
    assert err < 1e-7


def test_directional_check_large_on_wrong_gradient(backend, rng):
    params, loss, grads = _quadratic_model(backend, rng)
    g = grads(params)
    xp = backend.xp
    wrong_scale = dict(g, b=1.5 * g["b"])
    wrong_missing_term = dict(g, W=g["W"] - 3.0 * params["W"] ** 2)
    wrong_sign = {k: -v for k, v in g.items()}
    for wrong in (wrong_scale, wrong_missing_term, wrong_sign):
        assert directional_gradient_check(loss, params, wrong) > 1e-3
    assert directional_gradient_check(loss, params, wrong_sign) > 0.99
    zeros = {k: xp.zeros(tuple(v.shape), dtype=v.dtype, device=backend.device) for k, v in g.items()}
    assert directional_gradient_check(loss, params, zeros) == pytest.approx(1.0)


def test_directional_check_restores_params_when_f_raises(backend, rng):
    params, loss, grads = _quadratic_model(backend, rng)
    originals = dict(params)
    g = grads(params)
    with pytest.raises(RuntimeError):
        directional_gradient_check(lambda p: (_ for _ in ()).throw(RuntimeError("x")), params, g)
    assert all(params[k] is originals[k] for k in originals)


def test_directional_check_bad_inputs(backend, rng):
    params, loss, grads = _quadratic_model(backend, rng)
    g = grads(params)
    with pytest.raises(ValueError, match="'b'"):
        directional_gradient_check(loss, params, {"W": g["W"]})
    with pytest.raises(ValueError, match=r"grads\['W'\]: expected shape"):
        directional_gradient_check(loss, params, dict(g, W=g["b"]))
    with pytest.raises((TypeError, ValueError), match=r"grads\['b'\]"):
        directional_gradient_check(loss, params, dict(g, b=_other_backend_array(backend, np.zeros(3))))
    with pytest.raises(ValueError, match="eps"):
        directional_gradient_check(loss, params, g, eps=0.0)
    with pytest.raises(TypeError, match="params"):
        directional_gradient_check(loss, {}, g)
