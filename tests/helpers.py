"""Shared test utilities: host conversion, namespace/device assertions, tolerances."""

import array_api_compat as aac
import numpy as np

from portnn._checks import to_host
from portnn.gradient_check import rel_error

#: Comparison tolerances by dtype; read them through tolerance(dtype), the one source.
#: float64: agreement to ~1e3 ulps; float32: what float32 arithmetic (and another
#: backend's summation order) leaves on O(1) values.
TOL = {"float64": dict(rtol=1e-12, atol=1e-12), "float32": dict(rtol=1e-5, atol=1e-5)}


def tolerance(dtype):
    """``dict(rtol=..., atol=...)`` for comparing results computed in ``dtype``
    ("float32"/"float64", a NumPy dtype or a backend's dtype object)."""
    try:
        name = np.dtype(dtype).name  # strings, NumPy/CuPy dtypes
    except TypeError:
        name = str(dtype).rsplit(".", 1)[-1]  # torch.float32, array_api_strict's float32
    return dict(TOL[name])


def to_np(x, backend=None):
    """Any backend array (or scalar) -> NumPy on the host."""
    return to_host(x, "x")


def assert_on_backend(x, backend):
    """x must be an array of ``backend``'s library AND on its device."""
    assert backend.is_array(x), f"expected a {backend.name} array, got {type(x)}"
    assert aac.device(x) == backend.device, f"expected device {backend.device}, got {aac.device(x)}"


def put(backend, *arrays, dtype="float64"):
    """Host arrays -> backend arrays (floats in dtype, integers as int64)."""
    out = []
    for a in arrays:
        a = np.asarray(a)
        out.append(backend.asarray(a, dtype=dtype if a.dtype.kind == "f" else None))
    return out if len(out) != 1 else out[0]


def grad_ok(analytic, numeric, rtol=1e-6, atol=1e-8):
    """Relative error below rtol, or (for gradients that are exactly zero, like a
    bias feeding batchnorm) an absolute difference below atol."""
    a, n = to_np(analytic), to_np(numeric)
    return rel_error(a, n) < rtol or float(np.max(np.abs(a - n))) < atol


def loss_of_param(model, name, X, y):
    """f(w) = model's loss with params[name] replaced by w, for the numerical gradient
    checks: it uses its argument, so it works on immutable arrays (JAX), where the
    perturbed array is a new one, as well as on mutable ones."""

    def f(w):
        old = model.params[name]
        model.params[name] = w
        try:
            return model.loss(X, y)[0]
        finally:
            model.params[name] = old

    return f


def assert_refuses_foreign_dout(backend, backward, cache, shape, fn):
    """``backward(dout, cache)`` refuses a float64 dout of ``shape`` from another backend
    (TypeError) and, on array_api_strict, from the other device (ValueError), naming
    ``fn``: for caches that keep no array to compare dout with (check_dout's origin)."""
    import pytest

    from portnn.backends import get_backend

    other = "torch" if backend.name != "torch" else "numpy"
    foreign = get_backend(other).asarray(np.ones(shape), dtype="float64")
    with pytest.raises(TypeError, match=rf"^{fn}: dout: expected an array of the forward's backend"):
        backward(foreign, cache)
    if backend.name == "array_api_strict":
        twin = get_backend("array_api_strict")
        if twin.device == backend.device:
            twin = get_backend("array_api_strict:device1")
        with pytest.raises(ValueError, match=rf"^{fn}: dout: expected an array on the forward's device"):
            backward(twin.asarray(np.ones(shape), dtype="float64"), cache)
