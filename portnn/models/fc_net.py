"""Fully connected networks: TwoLayerNet and FullyConnectedNet."""

from __future__ import annotations

from .._checks import check_float_in, check_positive_int
from ..blocks import Affine, BatchNorm, Dropout, LayerNorm, ReLU
from .sequential import BlockModel

_NORM_BLOCKS = {"batchnorm": BatchNorm, "layernorm": LayerNorm}
_NORMALIZATIONS = (None, *_NORM_BLOCKS)


class FullyConnectedNet(BlockModel):
    """{affine - [batch/layer norm] - relu - [dropout]} x (L - 1) - affine - softmax.

    Parameters (in ``.params``): W1..WL (D_in, D_out), b1..bL (D_out,), and
    gamma1/beta1 .. gamma{L-1}/beta{L-1} (D_out,) when normalization is set.
    ``dropout_keep_ratio`` is the probability of KEEPING a unit (1 = no dropout).
    ``seed`` makes weight initialisation AND dropout masks deterministic and the
    same on every backend. ``loss(X, y)``: X (N, input_dim) or (N, d1, ...).
    ``hidden_dims``: the hidden layer sizes, a sequence of ints >= 1 such as
    [100, 100]. With batchnorm, scores (``loss(X)``, ``predict``) use the running
    statistics that training creates: an untrained model raises a ValueError.
    Built from portnn.blocks like Sequential (``summary()`` shows them).
    """

    _bn_word = "layer"

    def __init__(
        self,
        hidden_dims,
        input_dim=3 * 32 * 32,
        num_classes=10,
        dropout_keep_ratio=1,
        normalization=None,
        reg=0.0,
        weight_scale=1e-2,
        dtype="float32",
        seed=None,
        backend=None,
    ):
        hidden_dims = _layer_sizes(hidden_dims)
        check_positive_int(input_dim, "input_dim")
        check_positive_int(num_classes, "num_classes")
        if normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"normalization: expected one of {list(_NORMALIZATIONS)}, got {normalization!r}"
            )
        keep = check_float_in(dropout_keep_ratio, "dropout_keep_ratio", 0.0, 1.0, lo_open=True)
        check_float_in(weight_scale, "weight_scale", 0.0, float("inf"))
        super().__init__(reg=reg, dtype=dtype, seed=seed, backend=backend)

        self.normalization = normalization
        self.use_dropout = keep != 1.0
        self.dropout_keep_ratio = keep
        self.num_layers = 1 + len(hidden_dims)
        self.num_classes = num_classes
        self.input_shape = (input_dim,)

        # affine - [norm] - relu - [dropout] per hidden layer, then the output affine;
        # parameters named by layer (W1, b1, gamma1, beta1, ...), buffers bn1.running_mean.
        blocks, self._layer_of = [], {}
        for i, width in enumerate(hidden_dims, start=1):
            layer = [Affine(width), *([_NORM_BLOCKS[normalization]()] if normalization else []), ReLU()]
            if self.use_dropout:
                layer.append(Dropout(keep))  # dropout stream i: the i-th dropout block
            self._layer_of.update((len(blocks) + k, i) for k in range(len(layer)))
            blocks += layer
        self._layer_of[len(blocks)] = self.num_layers
        blocks.append(Affine(num_classes))
        self._build_blocks(blocks, self.input_shape, weight_scale,
                           name=lambda path, local: f"{local}{self._layer_of[path[0]]}",
                           buffer_name=lambda path, local: f"bn{self._layer_of[path[0]]}.{local}")

    def _bn_label(self, block_name):
        return self._layer_of[int(block_name)]


def _layer_sizes(hidden_dims):
    """hidden_dims as a list of Python ints >= 1: a sequence of sizes, not one int
    (nor a string, whose characters would be taken for sizes)."""
    bad = isinstance(hidden_dims, (str, bytes, dict))
    if not bad:
        try:
            sizes = list(hidden_dims)
        except TypeError:
            bad = True
    if bad:
        raise TypeError(
            f"hidden_dims: expected a sequence of layer sizes such as [100, 100], got {hidden_dims!r}"
        )
    return [check_positive_int(h, f"hidden_dims[{i}]") for i, h in enumerate(sizes)]


class TwoLayerNet(FullyConnectedNet):
    """affine - relu - affine - softmax, the course's first network.

    Params W1 (input_dim, hidden_dim), b1, W2 (hidden_dim, num_classes), b2.
    """

    def __init__(
        self,
        input_dim=3 * 32 * 32,
        hidden_dim=100,
        num_classes=10,
        weight_scale=1e-3,
        reg=0.0,
        dtype="float32",
        seed=None,
        backend=None,
    ):
        super().__init__(
            [hidden_dim],
            input_dim=input_dim,
            num_classes=num_classes,
            weight_scale=weight_scale,
            reg=reg,
            dtype=dtype,
            seed=seed,
            backend=backend,
        )
