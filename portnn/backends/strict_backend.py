"""array_api_strict: the standard's reference implementation, used to prove portability.

Its extra devices ("device1", "device2") behave like a GPU on a CPU-only machine:
mixing devices raises and implicit NumPy conversion is refused, so code that passes
there does not leak host arrays or forget ``device=``.
"""

import numpy as np

from ._base import Backend, BackendError

NAME = "array_api_strict"


def make(device=None) -> Backend:
    try:
        import array_api_strict as xp
        from array_api_strict._array_object import Array
    except ImportError as e:
        raise BackendError("array_api_strict: not installed (pip install array-api-strict)") from e
    names = {"CPU_DEVICE": xp.Device("CPU_DEVICE"), "device1": xp.Device("device1"),
             "device2": xp.Device("device2")}
    if device is None:
        dev = names["CPU_DEVICE"]
    elif isinstance(device, str):
        if device not in names:
            raise BackendError(f"array_api_strict: unknown device {device!r}, expected one of {list(names)}")
        dev = names[device]
    else:
        dev = device
    # np.from_dlpack works from every strict device (np.asarray refuses device1).
    return Backend(NAME, xp, dev, np.from_dlpack, lambda x: isinstance(x, Array))
