"""NumPy: the CPU backend and the host format."""

import numpy as np

from ._base import Backend, BackendError

NAME = "numpy"


def owns_namespace(xp) -> bool:
    """Whether ``xp`` is NumPy: array-api-compat's wrapper (what portnn uses) or numpy itself."""
    import array_api_compat.numpy as compat

    return xp is compat or xp is np


def primitives() -> dict:
    """NumPy's threaded versions of portnn._windows primitives (backends/numpy_primitives.py),
    and "conv2d", oneDNN's convolution, when the optional extra is installed (backends/onednn.py)."""
    from .numpy_primitives import PRIMITIVES
    from .onednn import conv2d

    kernel = conv2d()
    return PRIMITIVES if kernel is None else {**PRIMITIVES, "conv2d": kernel}


def make(device=None) -> Backend:
    import array_api_compat.numpy as xp

    if device not in (None, "cpu"):
        raise BackendError(f"numpy: only the 'cpu' device exists, got {device!r}")
    return Backend(NAME, xp, "cpu", np.asarray, lambda x: isinstance(x, np.ndarray))
