"""What every portnn model shares: backend and dtype handling, seeded host-side
initialisation, input validation, L2 regularisation and the state dict."""

from __future__ import annotations

import math

from .. import random as prandom
from ..backends import get_backend
from .._checks import check_float_in, check_labels


class Model:
    """Base class. Subclasses fill ``self.params`` (name -> backend array) in
    ``__init__`` through ``_add_param`` and implement ``_forward_backward``.

    Public entry point: ``loss(X, y=None)`` as in the course API:
      X : (N, ...) float array of the model's backend, device and dtype
      y : (N,) integer labels, or None
    Returns scores (N, C) when y is None, else (loss: float, grads: dict).
    """

    num_classes: int
    input_shape: tuple

    def __init__(self, *, reg, dtype, seed, backend):
        self.backend = get_backend(backend)
        self.dtype = self.backend.dtype(dtype)
        self.reg = check_float_in(reg, "reg", 0.0, math.inf)
        self.seed = seed
        self._host_rng = prandom.host_generator(seed)
        # Seeded dropout masks depend on (seed, rng_step, layer); the Solver
        # advances rng_step once per training step (see advance_rng).
        self.rng_step = 0
        self.params = {}

    # ------------------------------------------------------------------ setup
    def _add_param(self, name, host_array):
        self.params[name] = self.backend.asarray(host_array, dtype=self.dtype)

    def _add_constant(self, name, shape, value):
        xp = self.backend.xp
        self.params[name] = xp.full(shape, value, dtype=self.dtype, device=self.backend.device)

    def _normal(self, scale, shape):
        """Seeded N(0, scale^2) weights drawn on the host: bit-identical on every backend."""
        return scale * self._host_rng.standard_normal(shape)

    def advance_rng(self):
        """Move to the next dropout masks (called by the Solver after each step)."""
        self.rng_step += 1

    def _dropout_seed(self, layer):
        if self.seed is None:
            return None  # fresh masks on every call, as in the course code
        return prandom.fold_in(self.seed, self.rng_step, layer)

    # ------------------------------------------------------------------ loss
    def _check_inputs(self, X, y):
        self.backend.check_array(X, "X")
        if X.dtype != self.dtype:
            raise TypeError(f"X: expected dtype {self.dtype} (the model's dtype), got {X.dtype}")
        if tuple(X.shape[1:]) != tuple(self.input_shape) and math.prod(X.shape[1:]) != math.prod(
            self.input_shape
        ):
            raise ValueError(
                f"X: expected shape (N, {', '.join(map(str, self.input_shape))}), got {tuple(X.shape)}"
            )
        if y is not None:
            self.backend.check_array(y, "y")
            check_labels(self.backend.xp, y, X.shape[0], self.num_classes, "y")

    def loss(self, X, y=None):
        """Scores (N, C) if y is None; else (loss as a Python float, grads dict)."""
        self._check_inputs(X, y)
        if y is None:
            return self._forward_backward(X, None)
        loss, grads = self._forward_backward(X, y)
        return float(loss), grads

    def _loss_device(self, X, y):
        """Internal, used by the Solver: no validation, loss stays a 0-d device array."""
        return self._forward_backward(X, y)

    def _forward_backward(self, X, y):
        raise NotImplementedError

    def _weight_names(self):
        """Parameters that L2 regularisation applies to: weights and filters only."""
        return [k for k in self.params if k.startswith("W")]

    def _add_regularisation(self, loss, grads):
        """loss + 0.5 * reg * sum(W**2); grads[W] += reg * W."""
        if self.reg == 0.0:
            return loss
        xp = self.backend.xp
        for k in self._weight_names():
            w = self.params[k]
            loss = loss + 0.5 * self.reg * xp.sum(w * w)
            grads[k] = grads[k] + self.reg * w
        return loss

    # ------------------------------------------------------------------ state
    def buffers(self) -> dict:
        """Non-trainable state (batchnorm running statistics), name -> array."""
        return {}

    def load_buffers(self, buffers: dict) -> None:
        if buffers:
            raise KeyError(f"unexpected buffers {sorted(buffers)}")

    def state_dict(self) -> dict:
        """Params and buffers as name -> backend array (no copies: arrays are never
        updated in place by portnn, so references are snapshots)."""
        out = dict(self.params)
        out.update(self.buffers())
        return out
