"""Argument validation at the public boundary (DESIGN rule 6).

Every message names the argument, what was expected and what came. These run
before any state is touched, so a failing call mutates nothing. They only read
shapes and dtypes (host metadata): no device synchronisation, except
``check_labels`` whose range check needs one small reduction.
"""

from __future__ import annotations

import math

from .backends import namespace


def _dtype_str(dt) -> str:
    """'float32' for np.float32, np.dtype('float32'), torch.float32, strict's float32."""
    name = getattr(dt, "name", None) or getattr(dt, "__name__", None) or str(dt)
    return str(name).rsplit(".", 1)[-1]


def is_float_dtype(xp, dtype) -> bool:
    return dtype in (xp.float32, xp.float64)


def check_float_array(xp, x, name: str, ndim=None, min_ndim=None):
    """x must be a float32/float64 array of the given rank."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}")
    if not is_float_dtype(xp, x.dtype):
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {_dtype_str(x.dtype)}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {tuple(x.shape)}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(f"{name}: expected at least {min_ndim} dimensions, got shape {tuple(x.shape)}")


def check_same_dtype(name_a, a, name_b, b):
    if a.dtype != b.dtype:
        raise TypeError(
            f"{name_b}: expected dtype {_dtype_str(a.dtype)} (the dtype of {name_a}), "
            f"got {_dtype_str(b.dtype)}"
        )


def check_shape(x, name: str, expected: tuple):
    """Exact shape check; use None in ``expected`` for a free dimension."""
    shape = tuple(x.shape)
    if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, shape)):
        exp = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{name}: expected shape {exp}, got {shape}")


def check_labels(xp, y, n: int, num_classes: int, name: str = "y"):
    """Integer labels of shape (n,) with 0 <= y[i] < num_classes.

    The range check is one reduction and one small device->host read.
    """
    if not hasattr(y, "dtype"):
        raise TypeError(f"{name}: expected an integer array of labels, got {type(y).__name__}")
    if y.dtype not in (xp.int64, xp.int32, xp.int16, xp.int8, xp.uint8):
        raise TypeError(f"{name}: expected integer labels, got dtype {_dtype_str(y.dtype)}")
    if tuple(y.shape) != (n,):
        raise ValueError(f"{name}: expected shape ({n},) to match the batch, got {tuple(y.shape)}")
    if n:
        lo, hi = int(xp.min(y)), int(xp.max(y))
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{name}: labels must lie in [0, {num_classes}), got values in [{lo}, {hi}]"
            )


def check_positive_int(value, name: str, minimum: int = 1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def check_float_in(value, name: str, lo: float, hi: float, lo_open=False, hi_open=False):
    """A real number in the interval [lo, hi] (ends open as requested); returns float(value)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a real number, got {value!r}") from None
    ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi) and math.isfinite(v)
    if not ok:
        interval = ("(" if lo_open else "[") + f"{lo}, {hi}" + (")" if hi_open else "]")
        raise ValueError(f"{name}: expected a value in {interval}, got {value!r}")
    return v


def check_array_beside(ref, a, name: str, expected: str = "an array"):
    """``a`` must be an array of ``ref``'s backend and device; errors start with ``name``."""
    if not (hasattr(a, "shape") and hasattr(a, "dtype")):
        raise TypeError(f"{name}: expected {expected}, got {type(a).__name__}")
    try:
        namespace(ref, a)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{name}: {e}") from None
