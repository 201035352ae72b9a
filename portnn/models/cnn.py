"""ThreeLayerConvNet: conv - relu - 2x2 max pool - affine - relu - affine - softmax."""

from __future__ import annotations

from .. import layer_utils as lu
from .. import layers as L
from .._checks import check_float_in, check_positive_int
from .base import Model


class ThreeLayerConvNet(Model):
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
        self.conv_param = {"stride": 1, "pad": (filter_size - 1) // 2}
        self.pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
        # Output of the conv keeps H, W only for odd filter sizes; compute it in general.
        pad = self.conv_param["pad"]
        Hc, Wc = H + 2 * pad - filter_size + 1, W + 2 * pad - filter_size + 1
        if Hc < 2 or Wc < 2:
            raise ValueError(f"filter_size: {filter_size} is too large for {H}x{W} inputs")
        pooled = num_filters * (Hc // 2) * (Wc // 2)

        self._add_param("W1", self._normal(weight_scale, (num_filters, C, filter_size, filter_size)))
        self._add_constant("b1", (num_filters,), 0.0)
        self._add_param("W2", self._normal(weight_scale, (pooled, hidden_dim)))
        self._add_constant("b2", (hidden_dim,), 0.0)
        self._add_param("W3", self._normal(weight_scale, (hidden_dim, num_classes)))
        self._add_constant("b3", (num_classes,), 0.0)

    def _forward_backward(self, X, y):
        p = self.params
        h1, c1 = lu.conv_relu_pool_forward(X, p["W1"], p["b1"], self.conv_param, self.pool_param)
        h2, c2 = lu.affine_relu_forward(h1, p["W2"], p["b2"])
        scores, c3 = L.affine_forward(h2, p["W3"], p["b3"])
        if y is None:
            return scores
        loss, dscores = L.losses.softmax_loss_device(scores, y)
        grads = {}
        dh2, grads["W3"], grads["b3"] = L.affine_backward(dscores, c3)
        dh1, grads["W2"], grads["b2"] = lu.affine_relu_backward(dh2, c2)
        # The network input's gradient is never used: skip that work in the conv.
        _, grads["W1"], grads["b1"] = lu.conv_relu_pool_backward(dh1, c1, need_dx=False)
        loss = self._add_regularisation(loss, grads)
        return loss, grads
