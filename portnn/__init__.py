"""portnn: a small modular neural-network library written once against the Python
Array API standard, so the same code trains on NumPy, CuPy and PyTorch tensors.

    >>> import portnn
    >>> data = portnn.data.load_digits()
    >>> model = portnn.FullyConnectedNet([100, 100], input_dim=64, seed=0, backend="numpy")
    >>> solver = portnn.Solver(model, data, update_rule="adam", num_epochs=5, verbose=False)
"""

from . import backends, blocks, data, gradient_check, layer_utils, layers, models, optim, random, schedules
from .backends import (
    Backend,
    BackendError,
    available_backends,
    get_backend,
    namespace,
    set_backend,
    use_backend,
)
from .io import load, save
from .models import FullyConnectedNet, Sequential, ThreeLayerConvNet, TwoLayerNet
from .solver import DivergenceError, Solver

__version__ = "0.1.0"

__all__ = [
    "Backend", "BackendError", "available_backends", "get_backend", "namespace", "set_backend",
    "use_backend", "FullyConnectedNet", "ThreeLayerConvNet", "TwoLayerNet", "Sequential", "Solver",
    "DivergenceError", "save", "load", "schedules", "backends", "blocks", "data", "gradient_check", "layer_utils", "layers", "models", "optim", "random",
]
