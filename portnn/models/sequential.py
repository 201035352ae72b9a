"""Models composed of blocks: the shared machinery (``BlockModel``) and ``Sequential``.

FullyConnectedNet, TwoLayerNet and ThreeLayerConvNet are BlockModels too: they
choose their blocks and how parameters are named (``W1``, ``gamma2``), and share
everything else here (building, the forward/backward, buffers, summary).
"""

from __future__ import annotations

import math
import numbers

from .. import layers as L
from .._checks import check_float_in, float_dtype_name
from ..blocks import BatchNorm, Builder, Residual, Run, chain_backward, chain_forward, copy_blocks
from .base import Model

#: loss name -> the name of its device function in portnn.layers.losses (looked up
#: per call, so a patched or wrapped loss function is the one used).
_LOSSES = {"softmax": "softmax_loss_device", "svm": "svm_loss_device"}


class BlockModel(Model):
    """A Model whose forward/backward is a chain of blocks (portnn.blocks).

    Subclasses call ``_build_blocks`` in ``__init__``; ``_bn_label`` says how an
    error names a batchnorm block ("layer 2" here, "block 3.1" in Sequential).
    """

    _bn_word = "block"

    def _build_blocks(self, blocks, input_shape, weight_init, name=None, buffer_name=None, loss="softmax"):
        self.blocks = copy_blocks(blocks)
        builder = Builder(weight_init, self._normal, name, buffer_name)
        out = builder.build_chain(self.blocks, input_shape)
        if len(out) != 1:
            raise ValueError(f"{type(self).__name__}: the last block must give class scores (num_classes,), "
                             f"got per-sample shape {out}; end with Affine(num_classes)")
        for pname, entry in builder.params.items():
            if entry[0] == "normal":
                self._add_param(pname, entry[1])
            else:
                self._add_constant(pname, entry[1], entry[2])
        self._weights = list(builder.weights)
        self._buffer_shapes = dict(builder.buffers)
        self._buffers = {}
        self._loss_name = _LOSSES[loss]
        self.num_classes = out[0]
        self.input_shape = tuple(input_shape)

    # ------------------------------------------------------------------ forward / backward
    def _forward_backward(self, X, y):
        mode = "test" if y is None else "train"
        if mode == "test":
            self._check_running_stats()  # a few dict look-ups, no device work
        if len(self.input_shape) == 1 and X.ndim != 2:
            # (N, d1, ..., dk) features (Model._check_inputs accepts them): as (N, D), so a
            # first block other than Affine (BatchNorm, LayerNorm) sees the input shape it was built for.
            X = self.backend.xp.reshape(X, (X.shape[0], self.input_shape[0]))
        run = Run(mode, self.params, self._buffers, self._dropout_seed)
        scores, caches = chain_forward(self.blocks, X, run)
        if y is None:
            return scores
        loss, dscores = getattr(L.losses, self._loss_name)(scores, y)
        # The network input's gradient is never used: the first block with
        # parameters skips its dx, the blocks before it are not run backwards.
        chain_backward(self.blocks, dscores, caches, run, need_dx=False)
        grads = {k: run.grads[k] for k in self.params}  # the params' order
        return self._add_regularisation(loss, grads), grads

    def _weight_names(self):
        return list(self._weights)

    # ------------------------------------------------------------------ buffers
    def _bn_label(self, block_name):
        return block_name

    def _batchnorms(self):
        """(label, buffer names) of every BatchNorm block, in block order."""
        out = []
        for path, block in _walk(self.blocks):
            if isinstance(block, BatchNorm):
                out.append((self._bn_label(".".join(map(str, path))), list(block.buffer_names.values())))
        return out

    def running_stats_missing(self):
        """The batchnorm blocks with no running statistics yet: all of them before the
        first training step (or loading a state dict that holds them), none once
        trained; [] without batchnorm. Scoring needs none missing."""
        return [label for label, names in self._batchnorms() if any(n not in self._buffers for n in names)]

    def _check_running_stats(self):
        """Scores need every batchnorm block's running statistics: a model that was
        never trained would otherwise standardise by sqrt(eps) (outputs ~300x off)."""
        missing = self.running_stats_missing()
        if missing:
            raise ValueError(
                f"{type(self).__name__}: batchnorm {self._bn_word} {missing[0]} has no running statistics yet: "
                "train the model (Solver.train or loss(X, y)) before predicting, or load "
                "a state dict that holds them"
            )

    def buffers(self):
        return dict(self._buffers)

    def _buffer_names(self):
        return list(self._buffer_shapes)

    def _set_buffers_unchecked(self, buffers):
        self._buffers = dict(buffers)

    def load_buffers(self, buffers):
        unknown = set(buffers) - set(self._buffer_shapes)
        if unknown:
            raise KeyError(f"unexpected buffers {sorted(unknown)}; expected {self._buffer_names()}")
        for name, value in buffers.items():
            shape = self._buffer_shapes[name]
            if tuple(value.shape) != shape:
                raise ValueError(f"{name}: expected shape {shape}, got {tuple(value.shape)}")
        self._buffers.update(buffers)

    # ------------------------------------------------------------------ summary
    def summary(self, print_fn=print):
        """Print the blocks, their output shapes (per sample) and parameter counts.

        print_fn : called with each line (default ``print``; ``lines.append`` collects them).
        """
        rows = [("", "input", str(self.input_shape), "")]
        for path, block in _walk(self.blocks):
            count = sum(math.prod(self.params[n].shape) for n in block.param_names.values())
            label = "  " * (len(path) - 1) + (("Residual(projection=True)" if block.projection else "Residual")
                                              if isinstance(block, Residual) else repr(block))
            rows.append((".".join(map(str, path)), label, str(block.out_shape), f"{count:,}" if count else "-"))
        widths = [max(len(r[i]) for r in rows + [("block", "layer", "output shape", "params")]) for i in range(4)]
        line = "  ".join

        def fmt(r):
            return line([r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].ljust(widths[2]), r[3].rjust(widths[3])])

        total = sum(math.prod(v.shape) for v in self.params.values())
        buffers = sum(math.prod(s) for s in self._buffer_shapes.values())
        print_fn(f"{type(self).__name__} ({self.backend.name}, {self.dtype_name})")
        print_fn(fmt(("block", "layer", "output shape", "params")))
        print_fn("-" * len(fmt(rows[0])))
        for r in rows:
            print_fn(fmt(r))
        print_fn(f"parameters: {total:,} in {len(self.params)} arrays ({len(self._weights)} regularised)"
                 + (f"; buffers: {buffers:,}" if buffers else ""))

    @property
    def dtype_name(self):
        return float_dtype_name(self.dtype)


def _walk(blocks, prefix=()):
    """(path, block) of every block, depth first, a Residual before its blocks and
    its projection (path ... "proj") after them."""
    for i, block in enumerate(blocks):
        path = (*prefix, i)
        yield path, block
        if isinstance(block, Residual):
            yield from _walk(block.blocks, path)
            if block.proj is not None:
                yield (*path, "proj"), block.proj


class Sequential(BlockModel):
    """A network of blocks applied in turn, then a softmax (or SVM) loss.

    blocks : a list of portnn.blocks objects (or their ``config()`` dicts), e.g.
        ``[Conv(32, 3), BatchNorm(), ReLU(), MaxPool(2), GlobalAvgPool(), Affine(10)]``;
        the last one must give (num_classes,) scores per sample.
    input_dim : the per-sample input shape, (C, H, W) or D (or (D,)).
    loss : "softmax" | "svm".  reg : L2 strength, on weights and filters only.
    weight_init : "he" (N(0, 2 / fan_in)) or a number (N(0, number^2)).
    Parameters are named by block position: ``"0.W"``, ``"0.b"``, ``"3.1.gamma"``
    (block 1 inside the Residual at position 3), ``"3.proj.W"``; batchnorm buffers
    ``"2.running_mean"`` / ``"2.running_var"``. Every shape is inferred here: a
    block that does not fit its input raises a ValueError naming it.
    """

    _bn_word = "block"

    def __init__(self, blocks, input_dim, loss="softmax", reg=0.0, weight_init="he", dtype="float32",
                 seed=None, backend=None):
        input_shape = _input_shape(input_dim)
        if loss not in _LOSSES:
            raise ValueError(f"loss: expected one of {sorted(_LOSSES)}, got {loss!r}")
        if weight_init != "he":
            if isinstance(weight_init, str):
                raise ValueError(f"weight_init: expected 'he' or a positive number, got {weight_init!r}")
            weight_init = check_float_in(weight_init, "weight_init", 0.0, math.inf, lo_open=True)
        super().__init__(reg=reg, dtype=dtype, seed=seed, backend=backend)
        self._build_blocks(blocks, input_shape, weight_init, loss=loss)

    @property
    def config(self):
        cfg = super().config
        cfg["blocks"] = [b.config() for b in self.blocks]
        cfg["input_dim"] = list(self.input_shape)
        return cfg


def _input_shape(input_dim):
    dims = (input_dim,) if isinstance(input_dim, numbers.Integral) and not isinstance(input_dim, bool) else input_dim
    try:
        shape = tuple(int(d) for d in dims)
        ok = len(shape) in (1, 3) and all(d >= 1 and d == dd and not isinstance(dd, bool)
                                          for d, dd in zip(shape, dims))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"input_dim: expected (C, H, W) or a feature count D, got {input_dim!r}")
    return shape
