"""The one validation vocabulary of portnn (docs/design.md, "Errors at the boundary").

Every public function checks its arguments with these helpers before it touches
any state, so a failing call mutates nothing, and every message has the same
shape: ``"<argument>: expected <what>, got <what came>"``.

Rules shared by every helper:
- integers: Python ints and NumPy integer scalars (anything with ``__index__``)
  are accepted and returned as Python ints; ``bool`` is refused (True is not a
  stride); floats, strings and arrays are refused (TypeError); out of range is a
  ValueError.
- real numbers: Python/NumPy floats and ints are accepted and returned as
  Python floats (a NumPy float64 scalar would silently upcast float32 maths);
  ``bool`` and strings are refused (TypeError); NaN, inf and out of range are a
  ValueError.
- arrays: only shapes and dtypes are read (host metadata), never values, so no
  check causes a device synchronisation, except ``check_labels``' range check
  (one small reduction) and the host-side ``check_labels_host``.
"""

from __future__ import annotations

import difflib
import math
import operator

import array_api_compat as aac
import numpy as np

from .backends import backend_of, namespace
from .backends._base import dtype_str, float_dtype_name, host_dtype

__all__ = [
    "check_int", "check_positive_int", "check_float_in", "check_bool",
    "check_float_array", "check_same_dtype", "check_shape", "check_array_beside",
    "check_labels", "check_labels_host", "is_float_dtype", "check_keys", "check_finite_host",
    "check_dict", "check_is_array", "check_cache", "check_dout",
    "dtype_str", "float_dtype_name", "host_dtype", "to_host",
]

# --------------------------------------------------------------------------- scalars


def check_int(value, name: str, minimum: int | None = None, maximum: int | None = None,
              expected: str | None = None) -> int:
    """``value`` as a Python int with minimum <= value <= maximum (None: unbounded).

    ``expected`` overrides the phrase in the message ("an integer >= 1" by default).
    """
    if expected is None:
        if minimum is not None and maximum is not None:
            expected = f"an integer in [{minimum}, {maximum}]"
        elif minimum is not None:
            expected = f"an integer >= {minimum}"
        elif maximum is not None:
            expected = f"an integer <= {maximum}"
        else:
            expected = "an integer"
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected {expected}, got {value!r} (a bool)")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name}: expected {expected}, got {value!r}") from None
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        raise ValueError(f"{name}: expected {expected}, got {v}")
    return v


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """check_int with a lower bound (default 1): sizes, counts, strides."""
    return check_int(value, name, minimum=minimum)


def check_float_in(value, name: str, lo: float, hi: float, lo_open=False, hi_open=False,
                   expected: str | None = None) -> float:
    """A finite real number in the interval [lo, hi] (ends open as requested), as a Python float.

    ``expected`` overrides the phrase in the range message ("a value in [lo, hi]").
    """
    if isinstance(value, (bool, np.bool_, str, bytes)) or hasattr(value, "shape") and not np.isscalar(value):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a real number, got {value!r}") from None
    ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi) and math.isfinite(v)
    if not ok:
        if expected is None:
            expected = "a value in " + ("(" if lo_open else "[") + f"{lo}, {hi}" + (")" if hi_open else "]")
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return v


def check_bool(value, name: str) -> bool:
    """A real bool (Python or NumPy), not a truthy number or string."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


# --------------------------------------------------------------------------- dtypes
# dtype_str, float_dtype_name and host_dtype live with the backends (the only place that
# knows each library's dtype spellings) and are re-exported here.


def is_float_dtype(xp, dtype) -> bool:
    return dtype in (xp.float32, xp.float64)


# --------------------------------------------------------------------------- arrays


def _is_array(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, (int, float, bool))


def check_float_array(xp, x, name: str, ndim=None, min_ndim=None, layout: str | None = None):
    """x must be a float32/float64 array (of rank ``ndim``, or at least ``min_ndim``).

    ``layout`` (e.g. "(N, C, H, W)") is quoted in the rank message.
    """
    if not _is_array(x):
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}")
    if not is_float_dtype(xp, x.dtype):
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {dtype_str(x.dtype)}")
    what = f" {layout}" if layout else ""
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array{what}, got shape {tuple(x.shape)}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(f"{name}: expected at least {min_ndim} dimensions{what}, got shape {tuple(x.shape)}")


def check_same_dtype(name_a, a, name_b, b):
    if a.dtype != b.dtype:
        raise TypeError(
            f"{name_b}: expected dtype {dtype_str(a.dtype)} (the dtype of {name_a}), "
            f"got {dtype_str(b.dtype)}"
        )


def check_shape(x, name: str, expected: tuple):
    """Exact shape check; use None in ``expected`` for a free dimension."""
    shape = tuple(x.shape)
    if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, shape)):
        exp = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{name}: expected shape {exp}, got {shape}")


def check_array_beside(ref, a, name: str, expected: str = "an array"):
    """``a`` must be an array of ``ref``'s backend and device; errors start with ``name``."""
    if not _is_array(a):
        raise TypeError(f"{name}: expected {expected}, got {type(a).__name__}")
    try:
        namespace(ref, a)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{name}: {e}") from None


def check_is_array(x, name: str) -> None:
    """x must be an array (anything with .shape and .dtype, not a Python number)."""
    if not _is_array(x):
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}")


def check_cache(cache, fn: str, cls: type, forward: str):
    """A backward's cache must be the NamedTuple ``cls`` its forward returned (one
    isinstance: a None, a hand-made tuple or another layer's cache is refused)."""
    if not isinstance(cache, cls):
        raise TypeError(f"{fn}: cache must be what {forward} returned, got {type(cache).__name__}")


def check_dout(dout, fn: str, shape: tuple, dtype=None, *beside, origin=None):
    """A backward's upstream gradient: an array of the cached arrays' (``beside``)
    backend and device, of exactly the forward output's ``shape`` and, unless
    ``dtype`` is None, of the forward's dtype (so it cannot broadcast, or promote
    the cached arrays). A cache without arrays passes ``origin`` = the forward's
    (namespace, device) instead. Shapes and dtypes only: no device sync. Returns
    the namespace."""
    check_is_array(dout, f"{fn}: dout")
    xp = namespace(dout, *beside)
    if origin is not None:
        _check_origin(dout, xp, fn, origin)
    if tuple(dout.shape) != tuple(shape):
        raise ValueError(f"{fn}: dout: expected shape {tuple(shape)} (the forward's output), "
                         f"got {tuple(dout.shape)}")
    if dtype is not None and dout.dtype != dtype:
        raise TypeError(f"{fn}: dout: expected dtype {dtype_str(dtype)} (the forward's dtype), "
                        f"got {dtype_str(dout.dtype)}")
    return xp


def array_origin(xp, x):
    """(namespace, device) of x, for caches that hold no array (see check_dout)."""
    return xp, aac.device(x)


def _check_origin(dout, xp, fn, origin):
    want_xp, want_dev = origin
    if xp is not want_xp:
        raise TypeError(f"{fn}: dout: expected an array of the forward's backend "
                        f"({getattr(want_xp, '__name__', want_xp)}), got {type(dout).__module__}.{type(dout).__name__}")
    dev = aac.device(dout)
    if dev is not None and want_dev is not None and dev != want_dev:  # None: a tracer under jit
        raise ValueError(f"{fn}: dout: expected an array on the forward's device {want_dev}, got one on {dev}")


_INT_NAMES = ("int64", "int32", "int16", "int8", "uint8")


def check_labels(xp, y, n: int, num_classes: int, name: str = "y"):
    """Integer labels (device array) of shape (n,) with 0 <= y[i] < num_classes.

    The range check is two reductions and one small device->host read.
    """
    if not hasattr(y, "dtype"):
        raise TypeError(f"{name}: expected an integer array of labels, got {type(y).__name__}")
    if y.dtype not in tuple(getattr(xp, t) for t in _INT_NAMES):
        raise TypeError(f"{name}: expected integer labels, got dtype {dtype_str(y.dtype)}")
    if tuple(y.shape) != (n,):
        raise ValueError(f"{name}: expected shape ({n},) to match the batch, got {tuple(y.shape)}")
    if n:
        # min and max cross to the host together: one read (a sync on a GPU), not two.
        lo, hi = (int(v) for v in to_host(xp.stack([xp.min(y), xp.max(y)]), name))
        _check_label_range(name, lo, hi, num_classes)


def check_labels_host(y: np.ndarray, n: int, num_classes: int, name: str) -> np.ndarray:
    """Host integer labels of shape (n,) in [0, num_classes) -> an int64 copy."""
    if y.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer labels, got dtype {y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},) to match the images, got {y.shape}")
    if n:
        _check_label_range(name, int(y.min()), int(y.max()), num_classes)
    return y.astype(np.int64)


def _check_label_range(name, lo, hi, num_classes):
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"{name}: labels must lie in [0, {num_classes}), got values in [{lo}, {hi}]")


# --------------------------------------------------------------------------- host conversion


def to_host(a, name: str, copy: bool = False) -> np.ndarray:
    """Any backend array, NumPy array, scalar or array-like -> a NumPy array on the host.

    One explicit transfer for device arrays (``Backend.to_numpy``). ``copy=True``
    returns an array that owns its data: NumPy views, torch CPU tensors and strict
    arrays otherwise share memory with the result.
    """
    if isinstance(a, np.ndarray):
        return np.array(a, copy=True) if copy else a
    if isinstance(a, (np.generic, int, float, bool)):
        return np.array(a)
    if _is_array(a):
        host = backend_of(a).to_numpy(a)
        return np.array(host, copy=True) if copy else host
    try:
        return np.array(a) if copy else np.asarray(a)
    except Exception as e:
        raise TypeError(f"{name}: expected an array, got {type(a).__name__}") from e


# --------------------------------------------------------------------------- dicts and host data


def check_keys(params, name: str, accepted) -> None:
    """Every key of the dict ``params`` must be one of ``accepted``: an unknown key
    (a typo such as 'lr' for 'learning_rate', or an option portnn does not have, such
    as conv 'dilation') would otherwise be silently ignored. The message names the
    key, suggests the nearest accepted one and lists them all."""
    accepted = tuple(accepted)
    for key in params:
        if key in accepted:
            continue
        near = difflib.get_close_matches(str(key), [str(a) for a in accepted], n=1, cutoff=0.6)
        if not near and key == "lr" and "learning_rate" in accepted:
            near = ["learning_rate"]
        hint = f"; did you mean {near[0]!r}?" if near else ""
        listed = ", ".join(map(repr, accepted)) if accepted else "none"
        raise ValueError(f"{name}: unknown key {key!r}{hint} (accepted: {listed})")


def check_dict(value, name: str, expected: str, allow_none: bool = False) -> dict:
    """``value`` must be a dict (``expected`` says which keys, e.g. "a dict with 'p'
    and 'mode'"); None gives {} when ``allow_none``. Returns the dict."""
    if value is None and allow_none:
        return {}
    if not isinstance(value, dict):
        got = "None" if value is None else type(value).__name__
        raise TypeError(f"{name}: expected {expected}, got {got}")
    return value


def check_finite_host(a: np.ndarray, name: str, rows: bool = False) -> None:
    """Host data must hold no NaN or inf. ``rows=True`` names the first offending
    rows (samples) instead of counting values."""
    if a.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(a)
    if not bad.any():
        return
    if rows and a.ndim >= 1:
        idx = np.flatnonzero(bad.reshape(a.shape[0], -1).any(axis=1))
        shown = ", ".join(str(i) for i in idx[:10]) + (", ..." if idx.size > 10 else "")
        raise ValueError(f"{name}: {idx.size} of {a.shape[0]} rows hold NaN or inf (rows {shown})")
    raise ValueError(f"{name}: holds {int(bad.sum())} non-finite values (NaN or inf) of {a.size}")
