"""Models: each keeps ``.params`` on its backend and computes ``loss(X, y=None)``."""

from .base import Model
from .cnn import ThreeLayerConvNet
from .fc_net import FullyConnectedNet, TwoLayerNet
from .sequential import BlockModel, Sequential

__all__ = ["Model", "BlockModel", "Sequential", "FullyConnectedNet", "TwoLayerNet", "ThreeLayerConvNet"]
