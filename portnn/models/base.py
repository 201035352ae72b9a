"""What every portnn model shares: backend and dtype handling, seeded host-side
initialisation, input validation, L2 regularisation and the state dict."""

from __future__ import annotations

import contextlib
import inspect
import math

from .. import random as prandom
from .._checks import check_float_in, check_labels, dtype_str, float_dtype_name, to_host
from ..backends import get_backend
from ..data.batches import predict_labels


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

    def __new__(cls, *args, **kwargs):
        # Record the outermost constructor's arguments, so a checkpoint can rebuild
        # the same architecture (portnn.load) without pickling the object.
        self = super().__new__(cls)
        bound = inspect.signature(cls.__init__).bind(self, *args, **kwargs)
        bound.apply_defaults()
        self._init_args = {k: v for k, v in bound.arguments.items() if k not in ("self", "backend")}
        return self

    @property
    def config(self) -> dict:
        """The constructor arguments (minus backend) as JSON-friendly values."""
        out = {}
        for k, v in self._init_args.items():
            if k == "dtype":
                v = float_dtype_name(v)
            elif isinstance(v, tuple):
                v = list(v)
            elif k == "hidden_dims":
                v = [int(h) for h in v]
            elif k == "seed" and v is not None:
                v = int(v)  # a NumPy integer seed is accepted, and JSON has no int64
            out[k] = v
        return out

    def __init__(self, *, reg, dtype, seed, backend):
        self.backend = get_backend(backend)
        self.dtype = self.backend.dtype(dtype)
        self.reg = check_float_in(reg, "reg", 0.0, math.inf)
        self.seed = seed
        self._host_rng = prandom.host_generator(seed)
        # Seeded dropout masks depend on (seed, rng_step, layer); the Solver
        # advances rng_step once per training step (see advance_rng).
        self.rng_step = 0
        # Data-parallel training sets this to the process's rank, so each rank
        # draws its own (still reproducible) dropout masks; 0 = single process.
        self.rng_stream = 0
        self.params = {}
        # Set only while a compiled step traces the model (``_traced_state``).
        self._trace = None
        self._unseeded_trace_seed = None  # seed=None under tracing: drawn once (see _TracedRng)

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
        """The seed of dropout layer ``layer``'s mask at this step: an int
        fold_in(seed, rng_step, layer[, rng_stream]), None for fresh masks; while
        traced, the same key derived on the device from the traced step."""
        if self._trace is not None:
            return self._trace.dropout_key(layer)
        if self.seed is None:
            return None  # fresh masks on every call, as in the course code
        if self.rng_stream:
            return prandom.fold_in(self.seed, self.rng_step, layer, self.rng_stream)
        return prandom.fold_in(self.seed, self.rng_step, layer)

    @contextlib.contextmanager
    def _traced_state(self, params, buffers, rng_step):
        """Run the model on (possibly traced) state: for a compiled training step.

        params, buffers : name -> array, installed without checks (no host reads)
        rng_step : 0-d int64 array, the step that dropout masks are drawn for
        Inside, ``_forward_backward`` uses them and ``buffers()`` gives the new
        buffers; on exit (also on an error) the model's own params, buffers and
        rng state are back, so no traced value outlives the trace.
        """
        saved = self.params, self.buffers()
        self.params = dict(params)
        try:
            self._set_buffers_unchecked(buffers)
            self._trace = _TracedRng(self, rng_step)
            yield self
        finally:
            self._trace = None
            self.params = saved[0]
            self._set_buffers_unchecked(saved[1])

    # ------------------------------------------------------------------ loss
    def _check_inputs(self, X, y):
        self.backend.check_array(X, "X")
        if X.dtype != self.dtype:
            raise TypeError(
                f"X: expected dtype {dtype_str(self.dtype)} (the model's dtype), got {dtype_str(X.dtype)}"
            )
        # Dense models accept any (N, d1, ..., dk) with d1*...*dk = D (it is flattened);
        # image models need the exact (N, C, H, W).
        flat_ok = len(self.input_shape) == 1 and math.prod(X.shape[1:]) == self.input_shape[0]
        if tuple(X.shape[1:]) != tuple(self.input_shape) and not flat_ok:
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

    def _forward_backward(self, X, y):
        """Internal (``loss`` and the Solver call it): no validation; the loss stays a
        0-d device array. Scores (N, C) when y is None, else (loss, grads dict)."""
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
            flat = xp.reshape(w, (-1,))
            # sum(w**2) as an inner product: one BLAS dot, no w*w temporary
            # (4x faster than xp.sum(w * w) for the 3072x100 weights of benchmark W1).
            loss = loss + 0.5 * self.reg * (flat @ flat)
            grads[k] = grads[k] + self.reg * w
        return loss

    # ------------------------------------------------------------------ state
    def buffers(self) -> dict:
        """Non-trainable state (batchnorm running statistics), name -> array."""
        return {}

    def load_buffers(self, buffers: dict) -> None:
        if buffers:
            raise KeyError(f"unexpected buffers {sorted(buffers)}")

    def _set_buffers_unchecked(self, buffers: dict) -> None:
        """Make ``buffers`` (name -> array, maybe traced) the model's buffers,
        exactly: names not in it are removed. No checks, no host reads (the
        compiled step's install and restore; ``load_buffers`` is the checked way)."""
        if buffers:
            raise KeyError(f"unexpected buffers {sorted(buffers)}")

    def checkpoint_meta(self) -> dict:
        """What rebuilds this model from a checkpoint: class name, constructor
        arguments (``config``) and the dropout position (``rng_step``)."""
        return {"class": type(self).__name__, "config": self.config, "rng_step": self.rng_step}

    def state_dict(self) -> dict:
        """Params and buffers as name -> backend array (no copies: arrays are never
        updated in place by portnn, so references are snapshots)."""
        out = dict(self.params)
        out.update(self.buffers())
        return out

    def load_state_dict(self, state: dict) -> None:
        """Set params and buffers from ``state`` (name -> array of ANY backend or
        NumPy). Every name, shape and dtype kind is checked before anything is
        assigned, so a bad state leaves the model untouched."""
        expected = set(self.params) | set(self._buffer_names())
        # Buffers may be absent (batchnorm statistics exist only after a first
        # training step); every parameter must be there.
        missing, unexpected = set(self.params) - set(state), set(state) - expected
        if missing or unexpected:
            raise KeyError(
                f"state: missing {sorted(missing)}, unexpected {sorted(unexpected)} "
                f"for {type(self).__name__}"
            )
        converted = {}
        for name, value in state.items():
            host = to_host(value, f"state[{name!r}]")
            if host.dtype.kind != "f":
                raise TypeError(f"state[{name!r}]: expected a float array, got dtype {host.dtype}")
            if name in self.params and tuple(host.shape) != tuple(self.params[name].shape):
                raise ValueError(
                    f"state[{name!r}]: expected shape {tuple(self.params[name].shape)}, got {host.shape}"
                )
            converted[name] = self.backend.asarray(host, dtype=self.dtype)
        buffers = {k: v for k, v in converted.items() if k not in self.params}
        self.load_buffers(buffers)  # validates buffer shapes before we touch params
        for k, v in converted.items():
            if k in self.params:
                self.params[k] = v

    def _buffer_names(self):
        return list(self.buffers())

    def predict(self, X, batch_size=100):
        """Predicted labels for X (N, ...), host data or arrays of the model's backend.

        Scores are computed in batches of ``batch_size`` on the device; the labels
        cross to the host once per call. Returns a NumPy int64 array (N,).
        """
        return predict_labels(self, X, batch_size)


class _TracedRng:
    """Dropout keys while a model is traced: the host's fold_in(seed, rng_step,
    layer[, rng_stream]) computed on the device from a traced rng_step (a Python
    int there would be baked into the compiled program: the same masks at every
    step). Bit-identical to the host seeds, so compiled and eager runs draw the
    same masks."""

    def __init__(self, model, rng_step):
        self.model = model
        self.rng_step = rng_step
        self._step_key = None

    def dropout_key(self, layer):
        model = self.model
        if self._step_key is None:
            if model.seed is None:
                # Unseeded: one fresh seed per model, folded with the traced step,
                # so masks still differ from step to step.
                if model._unseeded_trace_seed is None:
                    model._unseeded_trace_seed = prandom.new_seed()
                seed = model._unseeded_trace_seed
            else:
                seed = model.seed
            be = model.backend
            self._step_key = prandom.fold_in_device(prandom.device_key(seed, be.xp, be.device), self.rng_step)
        data = (layer, model.rng_stream) if model.rng_stream else (layer,)
        return prandom.fold_in_device(self._step_key, *data)
