"""NumPy: the CPU backend and the host format."""

import numpy as np

from ._base import Backend, BackendError

NAME = "numpy"


def make(device=None) -> Backend:
    import array_api_compat.numpy as xp

    if device not in (None, "cpu"):
        raise BackendError(f"numpy: only the 'cpu' device exists, got {device!r}")
    return Backend(NAME, xp, "cpu", np.asarray, lambda x: isinstance(x, np.ndarray))
