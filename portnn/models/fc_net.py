"""Fully connected networks: TwoLayerNet and FullyConnectedNet."""

from __future__ import annotations

from .. import layer_utils as lu
from .. import layers as L
from .._checks import check_float_in, check_positive_int
from .base import Model

_NORMALIZATIONS = {
    None: (lu.affine_relu_forward, lu.affine_relu_backward),
    "batchnorm": (lu.affine_bn_relu_forward, lu.affine_bn_relu_backward),
    "layernorm": (lu.affine_ln_relu_forward, lu.affine_ln_relu_backward),
}


class FullyConnectedNet(Model):
    """{affine - [batch/layer norm] - relu - [dropout]} x (L - 1) - affine - softmax.

    Parameters (in ``.params``): W1..WL (D_in, D_out), b1..bL (D_out,), and
    gamma1/beta1 .. gamma{L-1}/beta{L-1} (D_out,) when normalization is set.
    ``dropout_keep_ratio`` is the probability of KEEPING a unit (1 = no dropout).
    ``seed`` makes weight initialisation AND dropout masks deterministic and the
    same on every backend. ``loss(X, y)``: X (N, input_dim) or (N, d1, ...).
    ``hidden_dims``: the hidden layer sizes, a sequence of ints >= 1 such as
    [100, 100]. With batchnorm, scores (``loss(X)``, ``predict``) use the running
    statistics that training creates: an untrained model raises a ValueError.
    """

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

        dims = [input_dim] + hidden_dims + [num_classes]
        for i in range(self.num_layers):
            self._add_param(f"W{i + 1}", self._normal(weight_scale, (dims[i], dims[i + 1])))
            self._add_constant(f"b{i + 1}", (dims[i + 1],), 0.0)
            if normalization is not None and i < self.num_layers - 1:
                self._add_constant(f"gamma{i + 1}", (dims[i + 1],), 1.0)
                self._add_constant(f"beta{i + 1}", (dims[i + 1],), 0.0)
        # One param dict per normalised layer; batchnorm keeps running stats in it.
        self.bn_params = [{"mode": "train"} for _ in range(self.num_layers - 1)]

    def _forward_backward(self, X, y):
        mode = "test" if y is None else "train"
        if mode == "test" and self.normalization == "batchnorm":
            self._check_running_stats()  # a few dict look-ups, no device work
        forward, backward = _NORMALIZATIONS[self.normalization]
        p = self.params
        caches = []
        h = X
        for i in range(1, self.num_layers):
            if self.normalization is None:
                h, cache = forward(h, p[f"W{i}"], p[f"b{i}"])
            else:
                self.bn_params[i - 1]["mode"] = mode
                h, cache = forward(
                    h, p[f"W{i}"], p[f"b{i}"], p[f"gamma{i}"], p[f"beta{i}"], self.bn_params[i - 1]
                )
            drop_cache = None
            if self.use_dropout:
                dp = {"p": self.dropout_keep_ratio, "mode": mode, "seed": self._dropout_seed(i)}
                h, drop_cache = L.dropout_forward(h, dp)
            caches.append((cache, drop_cache))
        L_ = self.num_layers
        scores, out_cache = L.affine_forward(h, p[f"W{L_}"], p[f"b{L_}"])
        if y is None:
            return scores

        loss, dscores = L.losses.softmax_loss_device(scores, y)
        grads = {}
        dh, grads[f"W{L_}"], grads[f"b{L_}"] = L.affine_backward(dscores, out_cache)
        for i in range(self.num_layers - 1, 0, -1):
            cache, drop_cache = caches[i - 1]
            if drop_cache is not None:
                dh = L.dropout_backward(dh, drop_cache)
            g = backward(dh, cache, need_dx=i > 1)
            dh, grads[f"W{i}"], grads[f"b{i}"] = g[:3]
            if self.normalization is not None:
                grads[f"gamma{i}"], grads[f"beta{i}"] = g[3], g[4]
        loss = self._add_regularisation(loss, grads)
        return loss, grads

    def running_stats_missing(self):
        """The batchnorm layers (1-based) that have no running statistics yet: all of
        them before the first training step (or loading a state dict that holds
        them), none once trained; [] without batchnorm. Scoring needs none missing."""
        if self.normalization != "batchnorm":
            return []
        return [i for i, bp in enumerate(self.bn_params, start=1)
                if bp.get("running_mean") is None or bp.get("running_var") is None]

    def _check_running_stats(self):
        """Scores need every batchnorm layer's running statistics: a model that was
        never trained would otherwise standardise by sqrt(eps) (outputs ~300x off)."""
        missing = self.running_stats_missing()
        if missing:
            raise ValueError(
                f"{type(self).__name__}: batchnorm layer {missing[0]} has no running statistics yet: "
                "train the model (Solver.train or loss(X, y)) before predicting, or load "
                "a state dict that holds them"
            )

    def buffers(self):
        out = {}
        if self.normalization == "batchnorm":
            for i, bp in enumerate(self.bn_params, start=1):
                for key in ("running_mean", "running_var"):
                    if key in bp:
                        out[f"bn{i}.{key}"] = bp[key]
        return out

    def _buffer_names(self):
        if self.normalization != "batchnorm":
            return []
        return [f"bn{i}.{k}" for i in range(1, self.num_layers) for k in ("running_mean", "running_var")]

    def _set_buffers_unchecked(self, buffers):
        """Exactly ``buffers`` as the running statistics (Model._set_buffers_unchecked):
        the compiled step installs traced ones and puts the concrete ones back."""
        for bp in self.bn_params:
            bp.pop("running_mean", None)
            bp.pop("running_var", None)
        for name, value in buffers.items():
            layer, key = name[2:].split(".")
            self.bn_params[int(layer) - 1][key] = value

    def load_buffers(self, buffers):
        unknown = set(buffers) - set(self._buffer_names())
        if unknown:
            raise KeyError(f"unexpected buffers {sorted(unknown)}; expected {self._buffer_names()}")
        for name, value in buffers.items():
            layer, key = name[2:].split(".")
            width = self.params[f"gamma{layer}"].shape[0]
            if tuple(value.shape) != (width,):
                raise ValueError(f"{name}: expected shape ({width},), got {tuple(value.shape)}")
        for name, value in buffers.items():
            layer, key = name[2:].split(".")
            self.bn_params[int(layer) - 1][key] = value


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
