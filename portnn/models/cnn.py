"""ThreeLayerConvNet: conv - relu - 2x2 max pool - affine - relu - affine - softmax."""

from __future__ import annotations

from .._checks import check_float_in, check_positive_int
from ..blocks import Affine, Conv, MaxPool, ReLU
from .sequential import BlockModel


class ThreeLayerConvNet(BlockModel):
    """conv - relu - 2x2 max pool - affine - relu - affine - softmax.

    input_dim : (C, H, W) of each image; X given to loss is (N, C, H, W).
    Params: W1 (F, C, fs, fs), b1 (F,) for the conv (stride 1, pad (fs - 1) // 2
    so H and W are kept); W2 (F * (H // 2) * (W // 2), hidden_dim), b2 for the
    hidden affine; W3 (hidden_dim, num_classes), b3 for the output affine.
    """

    def __init__(
        self,
        input_dim=(3, 32, 32),
        num_filters=32,
        filter_size=7,
        hidden_dim=100,
        num_classes=10,
        weight_scale=1e-3,
        reg=0.0,
        dtype="float32",
        seed=None,
        backend=None,
    ):
        try:
            C, H, W = (int(v) for v in input_dim)
        except (TypeError, ValueError):
            raise ValueError(f"input_dim: expected (C, H, W), got {input_dim!r}") from None
        for name, v in (("input_dim[0]", C), ("input_dim[1]", H), ("input_dim[2]", W),
                        ("num_filters", num_filters), ("filter_size", filter_size),
                        ("hidden_dim", hidden_dim), ("num_classes", num_classes)):
            check_positive_int(v, name)
        if H < 2 or W < 2:
            raise ValueError(f"input_dim: the 2x2 pool needs H, W >= 2, got {input_dim!r}")
        check_float_in(weight_scale, "weight_scale", 0.0, float("inf"))
        super().__init__(reg=reg, dtype=dtype, seed=seed, backend=backend)
        self.num_classes = num_classes
        self.input_shape = (C, H, W)
        # The conv keeps H, W only for odd filter sizes; compute its output in general.
        pad = (filter_size - 1) // 2
        Hc, Wc = H + 2 * pad - filter_size + 1, W + 2 * pad - filter_size + 1
        if Hc < 2 or Wc < 2:
            raise ValueError(f"filter_size: {filter_size} is too large for {H}x{W} inputs")

        # conv - relu - pool - affine - relu - affine, parameters W1/b1 (conv), W2/b2, W3/b3.
        # (The chain runs the relu after the pool: the same numbers, 4x less work.)
        blocks = [Conv(num_filters, filter_size, pad=pad), ReLU(), MaxPool(2), Affine(hidden_dim), ReLU(),
                  Affine(num_classes)]
        number = {0: 1, 3: 2, 5: 3}
        self._build_blocks(blocks, self.input_shape, weight_scale,
                           name=lambda path, local: f"{local}{number[path[0]]}")
