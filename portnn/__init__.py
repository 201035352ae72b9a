"""portnn: a small modular neural-network library written once against the Python
Array API standard, so the same code trains on NumPy, CuPy and PyTorch tensors."""

from .backends import (
    Backend,
    BackendError,
    available_backends,
    get_backend,
    namespace,
    set_backend,
    use_backend,
)

__version__ = "0.1.0"
