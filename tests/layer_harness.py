"""One test harness for every layer (in the spirit of Chainer's FunctionTestCase).

``check_layer(backend, dtype, inputs=..., forward=..., backward=..., reference=...)``
runs a layer on ``backend`` and checks, raising AssertionError with the name of
the failing check in the message:

  [dtype]          the output and every gradient have the input dtype and shape,
                   and lie on the backend's device (``assert_on_backend``);
  [reference]      the forward output equals the NumPy ``reference``;
  [parity]         output and gradients equal NumPy's on the same inputs and dout
                   (skipped when the backend is NumPy itself);
  [non-contiguous] the same layer on strided views of the inputs (every array is
                   built with a doubled last axis, NaN in the gaps, and sliced
                   ``[..., ::2]``) gives the contiguous run's output and gradients;
  [gradient]       (float64 only) every gradient backward returns equals the
                   numerical one from ``portnn.gradient_check.eval_numerical_gradient_array``
                   with a random dout, computed on the backend under test (or, with
                   ``numerical_on="numpy"``, with NumPy, for the expensive layers).

Comparisons use ``tests.helpers.tolerance(dtype)``; the gradient check uses
``rel_error(analytic, numeric) < grad_rtol`` or, for gradients that are all but
zero (a bias feeding batchnorm), ``max |analytic - numeric| < grad_atol``.

Usage::

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_affine(backend, dtype):
        check_layer(
            backend, dtype,
            inputs=lambda rng: (rng.standard_normal((4, 6)), rng.standard_normal((6, 5)), rng.standard_normal(5)),
            forward=affine_forward,                 # (*backend arrays) -> (out, cache)
            backward=affine_backward,               # (dout, cache) -> grads of the inputs
            reference=lambda x, w, b: x @ w + b,    # (*host float64 arrays) -> host out
        )

Conventions:
- ``inputs(rng)`` returns host arrays, one per array argument of ``forward``, drawn
  from the seeded ``rng``; float arrays are cast to ``dtype`` (the reference gets the
  float64 upcast of those rounded values), integer arrays (labels) go to the backend
  as int64 and are never differentiated.
- ``forward`` takes only backend arrays: bind other parameters in a lambda, and
  build parameter dicts INSIDE it (``lambda x, g, b: batchnorm_forward(x, g, b,
  {"mode": "train"})``): it is called many times and must not keep state.
- ``backward(dout, cache)`` returns one gradient per ``wrt`` input (default: every
  float input), as a tuple, or one array when there is one.
- ``forward``'s output may be a Python float (the losses): dout is then a 0-d array
  and only its value is checked.

It returns the contiguous run on the backend (``Run``) for extra, layer-specific
assertions (exact values, ``need_dx=False``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from portnn.backends import get_backend
from portnn.gradient_check import eval_numerical_gradient_array, rel_error
from tests.helpers import assert_on_backend, to_np, tolerance

DTYPES = ("float32", "float64")

#: The default numerical-gradient criterion (float64, h = 1e-5).
GRAD_RTOL = 1e-7


@dataclass
class Run:
    """One forward + backward: ``host`` inputs (NumPy, in the run's dtype), the backend
    ``inputs``, ``out``, ``cache``, ``dout`` (backend) and ``grads`` (a tuple)."""

    host: list
    inputs: list
    out: object
    cache: object
    dout: object
    grads: tuple


def check_layer(backend, dtype, *, inputs, forward, backward, reference=None, wrt=None, seed=0,
                noncontiguous=True, grad_rtol=GRAD_RTOL, grad_atol=0.0, h=1e-5, numerical_on=None) -> Run:
    """Run and check a layer on ``backend`` in ``dtype`` (module docstring). Returns the Run.

    numerical_on: None (default) evaluates the numerical gradients on ``backend``;
    "numpy" evaluates them with NumPy (whose forward [parity] has shown equal to this
    backend's) and compares this backend's analytic gradients with them: for layers
    with many inputs, where 2 forwards per input element on strict/torch would
    dominate the suite's time.
    """
    host = _host_inputs(inputs, seed, dtype)
    if wrt is None:
        wrt = tuple(i for i, a in enumerate(host) if a.dtype.kind == "f")
    wrt = tuple(wrt)
    dout_host = None  # drawn after the first forward, from the output's shape

    def run(be, strided=False, readonly=False):
        nonlocal dout_host
        xs = [_to_backend(be, a, dtype, strided, readonly) for a in host]
        out, cache = forward(*xs)
        if dout_host is None:
            dout_host = np.random.default_rng(seed + 1).standard_normal(_shape(out)).astype(dtype)
        dout = _to_backend(be, dout_host, dtype, readonly=readonly)
        grads = backward(dout, cache)
        grads = tuple(grads) if isinstance(grads, (tuple, list)) else (grads,)
        return Run(host, xs, out, cache, dout, grads)

    res = run(backend)
    _check_placement(backend, dtype, res, wrt)

    if reference is not None:
        expected = reference(*[a.astype(np.float64) if a.dtype.kind == "f" else a for a in host])
        assert_close(res.out, expected, dtype, "[reference] forward output vs the NumPy reference")

    if backend.name != "numpy":
        _assert_same(res, run(get_backend("numpy")), dtype, "[parity] vs numpy")

    if backend.name == "numpy":
        # Layers never write into their inputs (docs/design.md, rule 7): read-only
        # NumPy inputs and dout raise on any such write, and must give the same results.
        _assert_same(run(backend, readonly=True), res, dtype, "[read-only] read-only inputs vs writeable")

    if noncontiguous and any(a.ndim for a in host):
        nc = run(backend, strided=True)
        _check_placement(backend, dtype, nc, wrt)
        _assert_same(nc, res, dtype, "[non-contiguous] strided inputs vs contiguous")

    if dtype == "float64":
        nbe = backend if numerical_on is None else get_backend(numerical_on)
        for g, k in zip(res.grads, wrt, strict=True):
            xs = [_to_backend(nbe, a, dtype) for a in host]

            def f(a, k=k, xs=xs):
                return forward(*xs[:k], a, *xs[k + 1:])[0]

            num = eval_numerical_gradient_array(f, xs[k], res.dout, h=h)
            err, diff = rel_error(g, num), float(np.max(np.abs(to_np(g) - to_np(num)), initial=0.0))
            assert err < grad_rtol or diff < grad_atol, (
                f"[gradient] input {k}: analytic vs numerical gradient: rel_error {err:.3g} "
                f"(limit {grad_rtol:g}), max abs difference {diff:.3g} (limit {grad_atol:g})")
    return res


def assert_close(actual, expected, dtype, what=""):
    """Host values of ``actual`` (any backend, or a float) equal ``expected`` within tolerance(dtype)."""
    a, e = to_np(actual), np.asarray(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    np.testing.assert_allclose(a.astype(np.float64), e.astype(np.float64), **tolerance(dtype), err_msg=what)


# -- internals ------------------------------------------------------------------


def _host_inputs(inputs, seed, dtype):
    arrays = inputs(np.random.default_rng(seed))
    arrays = list(arrays) if isinstance(arrays, (tuple, list)) else [arrays]
    out = []
    for a in arrays:
        a = np.asarray(a)
        out.append(a.astype(dtype) if a.dtype.kind == "f" else a.astype(np.int64))
    return out


def _to_backend(be, a, dtype, strided=False, readonly=False):
    """Host array -> backend array; strided: a [..., ::2] view of a twice-as-wide array;
    readonly (NumPy only): the array refuses writes."""
    dt = dtype if a.dtype.kind == "f" else None
    if readonly:
        x = be.asarray(a, dtype=dt)
        x.setflags(write=False)
        return x
    if not strided or a.ndim == 0:
        return be.asarray(a, dtype=dt)
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    wide[..., 0::2] = a
    if a.dtype.kind == "f":
        wide[..., 1::2] = np.nan  # read by mistake, the gaps spoil the result
    return be.asarray(wide, dtype=dt)[..., ::2]


def _shape(out):
    return () if isinstance(out, float) else tuple(out.shape)


def _check_placement(backend, dtype, res, wrt):
    want = backend.dtype(dtype)
    if isinstance(res.out, float):
        pass  # a loss: a Python float, checked by value
    else:
        assert_on_backend(res.out, backend)
        assert res.out.dtype == want, f"[dtype] output dtype {res.out.dtype}, expected {want}"
    assert len(res.grads) == len(wrt), f"[dtype] backward returned {len(res.grads)} gradients, expected {len(wrt)}"
    for g, k in zip(res.grads, wrt, strict=True):
        assert_on_backend(g, backend)
        assert g.dtype == want, f"[dtype] gradient {k} has dtype {g.dtype}, expected {want}"
        assert tuple(g.shape) == res.host[k].shape, (
            f"[dtype] gradient {k} has shape {tuple(g.shape)}, expected {res.host[k].shape}")


def _assert_same(res, ref, dtype, what):
    assert_close(res.out, to_np(ref.out), dtype, f"{what}: output")
    for k, (g, r) in enumerate(zip(res.grads, ref.grads, strict=True)):
        assert_close(g, to_np(r), dtype, f"{what}: gradient {k}")
