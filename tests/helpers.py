"""Shared test utilities: host conversion, namespace/device assertions, tolerances."""

import numpy as np
import array_api_compat as aac

from portnn._checks import to_host
from portnn.backends import get_backend

TOL = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=1e-4, atol=1e-5)}


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


def rel_error(x, y):
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


def numeric_grad(f, x, df=None, h=1e-6):
    """Central-difference gradient of sum(f(x) * df) w.r.t. host float64 array x.

    f maps a host NumPy array to a host NumPy array (or float); tests wrap a
    backend layer as ``lambda a: to_np(layer(backend.asarray(a)))``.
    """
    x = np.array(x, dtype=np.float64)
    return numerical_gradient(lambda: np.asarray(f(x.copy()), dtype=np.float64), x, h, df)


def grad_ok(analytic, numeric, rtol=1e-6, atol=1e-8):
    """Relative error below rtol, or (for gradients that are exactly zero, like a
    bias feeding batchnorm) an absolute difference below atol."""
    a, n = to_np(analytic), to_np(numeric)
    return rel_error(a, n) < rtol or float(np.max(np.abs(a - n))) < atol


def numerical_gradient(f, a, h=1e-5, df=None):
    """Central differences of sum(f() * df) (of the scalar f() when df is None)
    w.r.t. every entry of the host array ``a``, which f reads and which is
    perturbed in place (and restored)."""
    g = np.zeros_like(a)
    it = np.nditer(a, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = a[i]
        a[i] = old + h
        fp = f()
        a[i] = old - h
        fm = f()
        a[i] = old
        g[i] = np.sum((fp - fm) * (1.0 if df is None else df)) / (2 * h)
    return g
