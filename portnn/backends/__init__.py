"""Backend registry: the only place in portnn that knows array libraries by name.

    >>> from portnn.backends import get_backend
    >>> be = get_backend("numpy")          # or "cupy", "torch", "array_api_strict"
    >>> x = be.asarray([[1.0, 2.0]], dtype="float32")
    >>> be.to_numpy(x * 2)
    array([[2., 4.]], dtype=float32)

A name may carry a device after a colon: "cupy:1", "torch:cuda",
"array_api_strict:device1".
"""

from __future__ import annotations

import contextlib
import os
import threading

import array_api_compat as aac
import numpy as np

from . import cupy_backend, jax_backend, numpy_backend, strict_backend, torch_backend
from ._base import Backend, BackendError, dtype_str, float_dtype_name

__all__ = [
    "Backend",
    "BackendError",
    "get_backend",
    "set_backend",
    "use_backend",
    "available_backends",
    "enable_64bit",
    "namespace",
    "backend_of",
    "primitives_of",
    "dtype_str",
    "float_dtype_name",
]

_MODULES = {
    m.NAME: m for m in (numpy_backend, cupy_backend, torch_backend, strict_backend, jax_backend)
}
BACKEND_NAMES = tuple(_MODULES)

_state = threading.local()
_cache: dict = {}


def _split(spec: str):
    name, _, dev = spec.partition(":")
    return name, (dev or None)


def get_backend(name=None) -> Backend:
    """Backend for ``name`` ("numpy", "cupy", "torch", "array_api_strict", optionally
    ":device"); None means the current default (set_backend / use_backend, else
    $PORTNN_BACKEND, else "numpy"). A Backend passes through unchanged.

    Raises BackendError saying why the backend cannot be used and listing the
    ones that can.
    """
    if isinstance(name, Backend):
        return name
    if name is None:
        name = getattr(_state, "default", None) or os.environ.get("PORTNN_BACKEND") or "numpy"
        if isinstance(name, Backend):
            return name
    if not isinstance(name, str):
        raise TypeError(f"backend: expected a backend name (str) or Backend, got {name!r}")
    if name in _cache:
        return _cache[name]
    base, dev = _split(name)
    if base not in _MODULES:
        raise BackendError(
            f"backend: unknown backend {base!r}; known: {list(BACKEND_NAMES)}, "
            f"available here: {available_backends()}"
        )
    try:
        be = _MODULES[base].make(dev)
    except BackendError as e:
        raise BackendError(f"{e}. Available here: {available_backends()}") from None
    _cache[name] = be
    return be


def enable_64bit(name) -> None:
    """For PROGRAMS (the command line, the self-test), never called by the library:
    make float64 and int64 available on backend ``name`` for this process. Only JAX
    needs it (its process-wide ``jax_enable_x64``, which must be set before any JAX
    array exists); for every other backend, and a JAX that is not installed, it does
    nothing."""
    spec = name if isinstance(name, str) else (os.environ.get("PORTNN_BACKEND") or "")
    if _split(spec)[0] == "jax":
        try:
            import jax
        except ImportError:
            return  # get_backend will say it is not installed
        jax.config.update("jax_enable_x64", True)


def set_backend(name) -> None:
    """Make ``name`` the default backend (for this thread)."""
    if name is not None:
        get_backend(name)  # fail now, with the reason, rather than at first use
    _state.default = name


@contextlib.contextmanager
def use_backend(name):
    """Context manager: ``with use_backend("torch"): ...`` temporarily changes the default."""
    get_backend(name)  # fail early with the reason
    old = getattr(_state, "default", None)
    _state.default = name
    try:
        yield get_backend(name)
    finally:
        _state.default = old


def available_backends() -> list[str]:
    """Names of the backends that actually work on this machine (cupy needs a GPU)."""
    out = []
    for n, mod in _MODULES.items():
        try:
            mod.make(None)
        except BackendError:
            continue
        out.append(n)
    return out


# array type -> its namespace, filled on first use. Layers resolve the namespace on
# every call; array-api-compat's full resolution costs ~13 us per call (about 8% of
# a small FCN step), a dict hit well under 1 us.
_NAMESPACE_OF_TYPE: dict = {}
_SCALARS = (int, float, bool)


def _device(a):
    try:
        return a.device  # the standard's attribute (torch, array_api_strict, CuPy, JAX arrays)
    except AttributeError:  # JAX tracers under jax.jit have none; array-api-compat knows
        return aac.device(a)


def namespace(*arrays):
    """The Array API namespace shared by ``arrays`` (None entries and Python scalars skipped).

    Raises TypeError when arrays of two libraries are mixed and ValueError when
    arrays live on two devices, naming both.
    """
    arrs = [a for a in arrays if a is not None and type(a) not in _SCALARS]
    if not arrs:
        raise TypeError("namespace: no arrays given")
    kind = type(arrs[0])
    xp = _NAMESPACE_OF_TYPE.get(kind)
    same_kind = True
    for a in arrs:
        if type(a) is not kind:
            same_kind = False
            break
    if xp is None or not same_kind:
        try:
            xp = aac.array_namespace(*arrs)
        except TypeError:
            kinds = sorted({f"{type(a).__module__}.{type(a).__name__}" for a in arrs})
            raise TypeError(
                f"arrays of different backends in one call: {kinds}; move them to one backend "
                f"with Backend.asarray / Backend.to_numpy"
            ) from None
        if same_kind:
            _NAMESPACE_OF_TYPE[kind] = xp
    if kind is np.ndarray:
        return xp  # NumPy has one device
    d0 = None
    for a in arrs:
        d = _device(a)
        if d is None:  # a JAX tracer under jit: placed by the compiler, nothing to compare
            continue
        if d0 is None:
            d0 = d
        elif d != d0:
            raise ValueError(
                f"arrays on different devices in one call: {d0} and {d}; move them to one "
                f"device first"
            )
    return xp


# namespace -> {primitive name: function}: the accelerated versions of low-level
# primitives that a backend module registers (docs/design.md, rule 2), resolved once
# per namespace. A backend module registers by defining owns_namespace(xp) and
# primitives(); most register none.
_PRIMITIVES: dict = {}


def primitives_of(xp) -> dict:
    """The primitives the backend owning namespace ``xp`` registered (often none)."""
    table = _PRIMITIVES.get(xp)
    if table is None:
        table = {}
        for mod in _MODULES.values():
            owns = getattr(mod, "owns_namespace", None)
            if owns is not None and owns(xp):
                table = mod.primitives()
        _PRIMITIVES[xp] = table
    return table


def _is_strict_array(x) -> bool:
    # array-api-compat has no is_array_api_strict_array; the namespace says it.
    try:
        return aac.is_array_api_strict_namespace(aac.array_namespace(x))
    except TypeError:  # not an array at all
        return False


# Which library owns an array, in array-api-compat's own words (no guessing from
# module names); the first match wins.
_LIBRARY_OF = (
    ("numpy", aac.is_numpy_array),
    ("torch", aac.is_torch_array),
    ("cupy", aac.is_cupy_array),
    ("array_api_strict", _is_strict_array),
    ("jax", aac.is_jax_array),
)


def backend_of(x) -> Backend:
    """The Backend (library + device) that owns array ``x``."""
    for name, is_array in _LIBRARY_OF:
        if is_array(x):
            be = get_backend(name)
            dev = aac.device(x)
            return be if dev == be.device else _with_device(be, dev)
    raise TypeError(f"not an array of a known backend: {type(x).__module__}.{type(x).__name__}")


def _with_device(be: Backend, dev) -> Backend:
    key = (be.name, str(dev))
    if key not in _cache:
        _cache[key] = Backend(be.name, be.xp, dev, be._host_copy, be._is_array)
    return _cache[key]
