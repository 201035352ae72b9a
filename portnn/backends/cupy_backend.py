"""CuPy on an NVIDIA GPU through array-api-compat."""

from ._base import Backend, BackendError

NAME = "cupy"


def make(device=None) -> Backend:
    try:
        import array_api_compat.cupy as xp
        import cupy
    except Exception as e:  # ImportError, or a CUDA library failing to load
        raise BackendError(
            f"cupy: not installed or not importable ({type(e).__name__}: {e}); "
            "pip install 'portnn[cuda12]' or 'portnn[cuda13]'"
        ) from e
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError when there is no driver
        raise BackendError(f"cupy: no GPU visible ({type(e).__name__}: {e})") from e
    if count == 0:
        raise BackendError("cupy: installed, but no CUDA device is visible")
    index = 0 if device is None else int(str(device).rsplit(":", 1)[-1])
    if not 0 <= index < count:
        raise BackendError(f"cupy: device {index} requested, {count} visible")
    dev = cupy.cuda.Device(index)
    return Backend(NAME, xp, dev, cupy.asnumpy, lambda x: isinstance(x, cupy.ndarray))
