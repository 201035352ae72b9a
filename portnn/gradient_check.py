"""Numerical gradient checking for arrays of any backend (NumPy, CuPy, torch, strict, JAX).

This is a test utility, not part of the compute path: it may use NumPy on the
host. x is read to the host once; each entry is perturbed by +h and -h (one
Python float per write: in place on mutable arrays, which are restored
bit-exactly; a new array per call on immutable ones such as JAX's), and the
numerical gradient is assembled on the host and sent back to x's backend and
device with one ``Backend.asarray``. x is left unchanged.

Use float64 inputs: with float32 and h = 1e-5 the central difference is
dominated by rounding.

- ``eval_numerical_gradient(f, x, verbose=False, h=1e-5)``: gradient of a scalar
  function, one element at a time (2 * x.size calls of f).
- ``eval_numerical_gradient_array(f, x, df, h=1e-5)``: gradient of
  ``sum(f(x) * df)`` for an array-valued f (a layer's backward against dout = df).
- ``rel_error(x, y)``: max relative error, a Python float.
- ``directional_gradient_check(f, params, grads, seed=0, eps=1e-6)``: compares
  analytic gradients with a central difference along ONE random direction over
  all parameters (2 calls of f in total), so it is cheap enough for big models on
  a GPU.
"""

from __future__ import annotations

import math

import array_api_compat as aac
import array_api_extra as xpx
import numpy as np

from ._checks import check_array_beside, check_float_array, dtype_str, to_host
from .backends import backend_of

__all__ = [
    "eval_numerical_gradient",
    "eval_numerical_gradient_array",
    "rel_error",
    "directional_gradient_check",
]


# -- host helpers ------------------------------------------------------------------------


def _host_copy(a) -> np.ndarray:
    """A NumPy copy that owns its data (x is written to afterwards; to_numpy may share memory)."""
    return to_host(a, "x", copy=True)


def _scalar(value, what: str) -> float:
    """A Python float from f's result: a Python number or a one-element array."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        host = _host_copy(value)
    except TypeError:
        raise TypeError(
            f"{what}: expected f to return a Python float or a 0-d array, got {type(value).__name__}"
        ) from None
    if host.size != 1:
        raise ValueError(f"{what}: expected f to return a scalar, got an array of shape {host.shape}")
    return float(host.reshape(()))


def _float_array_backend(x, name: str):
    """Backend of x, which must be a float32/float64 array of a known backend."""
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        raise TypeError(f"{name}: expected an array, got {type(x).__module__}.{type(x).__name__}")
    be = backend_of(x)
    check_float_array(be.xp, x, name)
    return be


def _to_backend(be, host_grad, x):
    """Host gradient -> array of x's backend, device, dtype and shape (0-d included)."""
    out = be.asarray(host_grad, dtype=dtype_str(x.dtype))
    if tuple(out.shape) != tuple(host_grad.shape):
        # np.ascontiguousarray makes 0-d arrays 1-d on the way in.
        out = be.xp.reshape(out, tuple(host_grad.shape))
    return out


# -- element-wise checks -----------------------------------------------------------------


def eval_numerical_gradient(f, x, verbose=False, h=1e-5):
    """Central-difference gradient of a scalar function at x.

    f       : callable, f(xp) -> Python float or 0-d array, where xp is x with one
              entry perturbed. On mutable arrays xp IS x, perturbed in place (so
              an f that reads x elsewhere, e.g. ``lambda _: model.loss(X, y)[0]``
              on ``model.params["W1"]``, works); on immutable arrays (JAX) xp is a
              new array and f must use it.
    x       : float array of shape S on any backend/device (float64 recommended);
              left unchanged (restored bit-exactly, also if f raises).
    verbose : print each index and its partial derivative.
    h       : step size.
    Returns grad, array of shape S with x's dtype, backend and device:
    ``grad[i] = (f(x + h e_i) - f(x - h e_i)) / (2h)``.
    """
    h = float(h)
    return _central_differences(
        x,
        lambda xp: _scalar(f(xp), "eval_numerical_gradient"),
        lambda pos, neg: (pos - neg) / (2.0 * h),
        h,
        verbose,
    )


def _central_differences(x, measure, combine, h, verbose=False):
    """For each entry of x, call ``measure(xp)`` with x perturbed by +h and by -h and
    store ``combine(pos, neg)``. Returns the gradient on x's backend and device.

    Mutable arrays (NumPy, CuPy, torch, strict) are perturbed IN PLACE and ``xp`` is
    x itself, so an f that reads x through another reference (the classic
    ``lambda _: model.loss(X, y)[0]`` on ``model.params[k]``) sees the change; x
    is restored bit-exactly, also if measure raises. Immutable arrays (JAX) get a
    new perturbed array per call (array-api-extra's ``at``): f must use its argument.
    Either way x is left unchanged."""
    be = _float_array_backend(x, "x")
    host = _host_copy(x)
    grad = np.zeros(host.shape, dtype=np.float64)
    in_place = aac.is_writeable_array(x)
    for idx in np.ndindex(*host.shape):
        old = float(host[idx])
        if in_place:
            try:
                x[idx] = old + h
                pos = measure(x)
                x[idx] = old - h
                neg = measure(x)
            finally:
                x[idx] = old  # exact: old came from x's own dtype
        else:
            pos = measure(xpx.at(x, idx).set(old + h))
            neg = measure(xpx.at(x, idx).set(old - h))
        grad[idx] = combine(pos, neg)
        if verbose:
            print(idx, grad[idx])
    return _to_backend(be, grad, x)


def eval_numerical_gradient_array(f, x, df, h=1e-5):
    """Central-difference gradient of ``sum(f(x) * df)`` with respect to x.

    f  : callable, f(xp) -> array of shape T (any backend); xp as in
         eval_numerical_gradient (x itself perturbed in place on mutable arrays,
         a new array on immutable ones).
    x  : float array of shape S on any backend/device; left unchanged.
    df : upstream gradient of shape T (any backend, or NumPy).
    h  : step size.
    Returns grad, array of shape S with x's dtype, backend and device:
    ``grad[i] = sum((f(x + h e_i) - f(x - h e_i)) * df) / (2h)``.
    """
    _float_array_backend(x, "x")
    df_host = _host_copy(df).astype(np.float64)
    h = float(h)

    def measure(xp):
        out = _host_copy(f(xp)).astype(np.float64)  # copied now: f may return x itself
        if out.shape != df_host.shape:
            raise ValueError(f"df: expected the shape of f(x), {out.shape}, got {df_host.shape}")
        return out

    return _central_differences(x, measure, lambda pos, neg: float(np.sum((pos - neg) * df_host)) / (2.0 * h), h)


def rel_error(x, y) -> float:
    """Maximum relative error ``max(|x - y| / max(1e-8, |x| + |y|))`` as a Python float.

    x, y : arrays of any backend (each may be a different one, or NumPy) or
           scalars, of broadcast-compatible shapes. NaN anywhere gives NaN.
    An empty input gives 0.0.
    """
    a = _host_copy(x).astype(np.float64)
    b = _host_copy(y).astype(np.float64)
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"rel_error: shapes {a.shape} and {b.shape} do not broadcast") from None
    err = np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))
    if err.size == 0:
        return 0.0
    return float(np.max(err))


# -- directional check -------------------------------------------------------------------


def directional_gradient_check(f, params, grads, seed=0, eps=1e-6) -> float:
    """Check analytic gradients along one random direction (2 evaluations of f).

    f      : callable, f(params) -> Python float or 0-d array (the loss). During
             the check the entries of ``params`` are REPLACED by perturbed arrays
             (the same dict object is passed to f), so f may read its argument or
             the dict itself, e.g. ``params = model.params`` and
             ``f = lambda p: model.loss(X, y)[0]``. The original array objects are
             put back afterwards (also if f raises); none is written to.
    params : dict name -> float array (any shapes; one backend/device each).
    grads  : dict name -> analytic gradient, same shape/backend/device as
             params[name] (extra keys are ignored); or a callable
             grads(params) -> such a dict, evaluated at the unperturbed params.
    seed   : seed of the host NumPy generator drawing the direction.
    eps    : step length along the unit direction (use float64 params).

    A standard-normal direction r (one block per parameter, in params order) is
    drawn on the host, scaled to unit norm over all parameters, and sent to each
    parameter's device. Returns the relative error, a Python float:
    ``|num - ana| / max(|num| + |ana|, 1e-300)`` with
    ``num = (f(p + eps r) - f(p - eps r)) / (2 eps)`` and ``ana = sum_k sum(grads[k] * r_k)``
    (0.0 if both are exactly 0). A correct float64 gradient typically gives < 1e-6;
    a wrong one gives O(1e-2) or more.
    """
    if not isinstance(params, dict) or not params:
        raise TypeError(f"params: expected a non-empty dict name -> array, got {type(params).__name__}")
    if callable(grads):
        grads = grads(params)
    if not isinstance(grads, dict):
        raise TypeError(f"grads: expected a dict name -> array or a callable, got {type(grads).__name__}")
    eps = float(eps)
    if not (math.isfinite(eps) and eps > 0.0):
        raise ValueError(f"eps: expected a finite number > 0, got {eps!r}")

    rng = np.random.default_rng(seed)
    host_dirs = {}
    for name, p in params.items():
        _float_array_backend(p, f"params[{name!r}]")
        if name not in grads:
            raise ValueError(f"grads: missing the gradient of {name!r}; params has {list(params)}")
        g = grads[name]
        check_array_beside(p, g, f"grads[{name!r}]")
        if tuple(g.shape) != tuple(p.shape):
            raise ValueError(f"grads[{name!r}]: expected shape {tuple(p.shape)}, got {tuple(g.shape)}")
        host_dirs[name] = rng.standard_normal(tuple(p.shape))
    norm = math.sqrt(sum(float(np.sum(r * r)) for r in host_dirs.values()))
    if norm == 0.0:  # every parameter is empty
        return 0.0

    dirs, analytic = {}, 0.0
    for name, p in params.items():
        be = backend_of(p)
        r = _to_backend(be, host_dirs[name] / norm, p)
        dirs[name] = r
        analytic += float(be.xp.sum(grads[name] * r))

    originals = dict(params)
    try:
        for name, p in originals.items():
            params[name] = p + eps * dirs[name]
        f_plus = _scalar(f(params), "directional_gradient_check")
        for name, p in originals.items():
            params[name] = p - eps * dirs[name]
        f_minus = _scalar(f(params), "directional_gradient_check")
    finally:
        params.update(originals)
    numeric = (f_plus - f_minus) / (2.0 * eps)
    denom = abs(numeric) + abs(analytic)
    if denom == 0.0:
        return 0.0
    return abs(numeric - analytic) / max(denom, 1e-300)
