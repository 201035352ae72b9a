"""The Backend value object shared by every backend module.

A Backend bundles an Array API namespace (``xp``) with the device that new
arrays are created on, plus the two host<->device crossings the library is
allowed to make: ``asarray`` (host data in) and ``to_numpy`` (results out).
"""

from __future__ import annotations

import array_api_compat as aac
import numpy as np


class BackendError(RuntimeError):
    """A backend was asked for that is unknown, not installed or has no device."""


def dtype_str(dtype) -> str:
    """The plain name of any library's dtype, for messages and host conversion:
    'float32' for np.float32, np.dtype('float32'), torch.float32, strict's float32."""
    if isinstance(dtype, str):
        return dtype
    try:
        return np.dtype(dtype).name  # NumPy / CuPy dtypes and scalar types
    except TypeError:
        pass
    name = getattr(dtype, "name", None) or getattr(dtype, "__name__", None) or str(dtype)
    return str(name).rsplit(".", 1)[-1]


_FLOAT_NAMES = ("float32", "float64")


def float_dtype_name(dtype) -> str:
    """Any spelling of a float dtype -> "float32" / "float64" (ValueError otherwise).

    Accepts "float32", np.float32, np.dtype("float32"), torch.float32,
    array_api_strict.float32, cupy.float32 ...
    """
    try:
        name = None if dtype is None else dtype_str(dtype)  # np.dtype(None) would be float64
    except Exception:
        name = None
    if name not in _FLOAT_NAMES:
        raise ValueError(
            f"dtype: expected one of {_FLOAT_NAMES} (as a string, a NumPy dtype or the "
            f"backend's own dtype object), got {dtype!r}"
        )
    return name


_HOST_NAMES = ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")


def host_dtype(dtype) -> np.dtype:
    """The NumPy dtype that holds arrays of a backend ``dtype`` on the host."""
    name = dtype_str(dtype)
    if name not in _HOST_NAMES:
        raise TypeError(f"unsupported dtype {dtype!r}")
    return np.dtype(name)


class Backend:
    """An array library plus a device.

    Attributes
    ----------
    name : str      "numpy", "cupy", "torch" or "array_api_strict"
    xp : module     the Array API namespace (array-api-compat wrapped where needed)
    device : object the device arrays are created on (as the library spells it)
    """

    def __init__(self, name, xp, device, host_copy, is_array):
        self.name = name
        self.xp = xp
        self.device = device
        self._host_copy = host_copy
        self._is_array = is_array

    # -- dtypes -------------------------------------------------------------
    def dtype(self, dtype="float32"):
        """The backend's dtype object for any accepted spelling of float32/float64."""
        return getattr(self.xp, float_dtype_name(dtype))

    # -- host <-> device ----------------------------------------------------
    def asarray(self, obj, dtype=None):
        """Host data (NumPy array, list, scalar) -> a new array on this backend's device.

        Always copies, so the library may later update the array in place without
        touching the caller's data (torch and array_api_strict share memory with
        NumPy inputs otherwise).
        """
        if self._is_array(obj) and not isinstance(obj, np.ndarray):
            # Already a device array of ours: only convert dtype if asked.
            return obj if dtype is None else self.xp.astype(obj, self.dtype_of(dtype))
        if aac.is_array_api_obj(obj) and not isinstance(obj, np.ndarray):
            raise TypeError(
                f"{self.name}.asarray: got an array of another backend "
                f"({type(obj).__module__}.{type(obj).__name__}); convert it to NumPy on the host "
                f"first with that backend's to_numpy()"
            )
        host = np.asarray(obj)
        if dtype is None:
            if host.dtype.kind == "f":
                name = host.dtype.name  # float16 passes through: the layers refuse it by name
                dt = self.dtype(name) if name in ("float32", "float64") else getattr(self.xp, name)
            elif host.dtype.kind in "iu":
                dt = self.dtype_of(self.index_dtype)
                host = host.astype(host_dtype(dt))
            elif host.dtype.kind == "b":
                dt = self.xp.bool
            else:
                raise TypeError(f"{self.name}.asarray: unsupported host dtype {host.dtype}")
        else:
            dt = self.dtype_of(dtype)
            host = host.astype(host_dtype(dt))
        return self.xp.asarray(np.require(host, requirements="C"), dtype=dt, device=self.device, copy=True)

    #: dtype of integer host data (labels, indices) on this backend.
    index_dtype = "int64"

    def dtype_of(self, dtype):
        """Backend dtype for float names/objects, or an integer/bool dtype of this backend."""
        for name in ("int64", "int32", "int8", "bool"):
            if dtype is getattr(self.xp, name, None) or dtype == name:
                return getattr(self.xp, name)
        return self.dtype(dtype)

    def to_numpy(self, x) -> np.ndarray:
        """A backend array -> a NumPy array on the host (an explicit, synchronous copy)."""
        if isinstance(x, np.ndarray) or np.isscalar(x):
            return np.asarray(x)
        return self._host_copy(x)

    # -- compilation ----------------------------------------------------------
    def compile(self, fn):
        """``fn`` (a pure function of arrays and dicts of arrays) as one compiled
        program, for ``Solver(compile=True)``. Only backends that trace and
        compile (JAX) have it; here a BackendError says so."""
        raise BackendError(
            f"{self.name}: cannot compile a training step; compile=True needs the jax backend "
            f"(pip install 'portnn[jax]')"
        )

    # -- identity -------------------------------------------------------------
    def is_array(self, x) -> bool:
        """True when x is an array of this backend (device not checked)."""
        return self._is_array(x)

    def check_array(self, x, argname: str):
        """Raise TypeError/ValueError unless x is an array of this backend on its device."""
        if not self._is_array(x):
            raise TypeError(
                f"{argname}: expected an array of the {self.name!r} backend "
                f"(on {self.device}), got {type(x).__module__}.{type(x).__name__}; "
                f"move host data with backend.asarray(...) (the Solver does this for you)"
            )
        dev = aac.device(x)
        if dev != self.device:
            raise ValueError(
                f"{argname}: expected an array on device {self.device} of the {self.name!r} "
                f"backend, got one on {dev}"
            )

    def __repr__(self):
        return f"Backend(name={self.name!r}, device={self.device!r})"

    def __eq__(self, other):
        return isinstance(other, Backend) and (self.name, str(self.device)) == (
            other.name,
            str(other.device),
        )

    def __hash__(self):
        return hash((self.name, str(self.device)))

