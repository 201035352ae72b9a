"""Datasets, returned as host NumPy arrays ready for ``portnn.Solver``.

- ``load_digits``: the bundled UCI handwritten digits (1,797 8x8 images, CC BY 4.0),
  offline, no download.
- ``load_cifar10``: CIFAR-10 from a local copy of the "python version" batches, read
  with a restricted unpickler that never runs code from the files.
"""

from .cifar10 import CIFAR10FormatError, UnsafePickleError, load_cifar10
from .digits import load_digits

__all__ = ["load_digits", "load_cifar10", "CIFAR10FormatError", "UnsafePickleError"]
