"""Blocks: the functional layers as small objects that a network is composed of.

A block holds its hyper-parameters (``Conv(32, 3)``), creates its parameters from
the input shape it receives when a model builds it, and runs the functional layer
forward and backward. Shapes are per sample: ``(C, H, W)`` for images, ``(D,)``
for features; the batch axis N is never part of a block's shape.

| block | input -> output | parameters (local names) |
|---|---|---|
| ``Affine(out_dim)`` | any -> (out_dim,) (flattens) | W (D, out_dim), b (out_dim,) |
| ``Conv(num_filters, filter_size, stride=1, pad=None)`` | (C, H, W) -> (F, H', W') | W (F, C, k, k), b (F,) |
| ``MaxPool(size, stride=None)``, ``AvgPool(size, stride=None)`` | (C, H, W) -> (C, H', W') | - |
| ``GlobalAvgPool()`` | (C, H, W) -> (C,) | - |
| ``BatchNorm()`` | (D,) or (C, H, W), same | gamma, beta (D,) or (C,); buffers running_mean, running_var |
| ``LayerNorm()`` | any, same (over all features of a sample) | gamma, beta (the input shape) |
| ``GroupNorm(groups)`` | (C, H, W), same | gamma, beta (C,) |
| ``ReLU()``, ``Dropout(keep_ratio)`` | any, same | - |
| ``Flatten()`` | any -> (D,) | - |
| ``Residual(*blocks, projection=False)`` | x -> x + f(x) | its blocks' (``"<i>.<name>"``), ``proj.W``/``proj.b`` |

``Conv``'s ``pad=None`` means "same" at stride 1 (``(filter_size - 1) // 2``, odd
filter sizes) and ``(filter_size - 1) // 2`` at larger strides too. Pooling's
``stride=None`` means the window size. ``Dropout(keep_ratio)`` KEEPS each unit
with probability keep_ratio (FullyConnectedNet's ``dropout_keep_ratio``).

The protocol a block implements (models call it; users only construct blocks):
  ``build(in_shape, builder) -> out_shape``  validate and create parameters
  ``forward(x, run) -> (out, cache)``        x (N, *in_shape) -> out (N, *out_shape)
  ``backward(dout, cache, run, need_dx) -> dx`` stores its parameter gradients
      in ``run.grads``; dx is None when need_dx is False
  ``config() -> dict``                        JSON: ``{"block": "Conv", ...}``
A model owns built copies of the blocks it was given (``Builder.build_chain``),
so one block object can describe several networks.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math

from . import layers as L
from ._checks import array_origin, check_bool, check_dout, check_float_in, check_keys, check_positive_int
from .backends import namespace

__all__ = [
    "Block", "Affine", "Conv", "MaxPool", "AvgPool", "GlobalAvgPool", "BatchNorm", "LayerNorm",
    "GroupNorm", "ReLU", "Dropout", "Flatten", "Residual", "block_from_config", "BLOCK_TYPES",
    "Builder", "Run", "chain_forward", "chain_backward",
]


class Block:
    """Base class: a block without parameters that passes shapes through."""

    def __init__(self):
        self.in_shape = self.out_shape = None
        self.param_names = {}  # local name -> the model's name (set by build)
        self.buffer_names = {}

    # -- what subclasses override
    def build(self, in_shape, builder):
        return in_shape

    def forward(self, x, run):
        raise NotImplementedError

    def backward(self, dout, cache, run, need_dx):
        raise NotImplementedError

    def _args(self) -> dict:
        """The constructor arguments, as JSON values."""
        return {}

    # -- shared
    def config(self) -> dict:
        return {"block": type(self).__name__, **self._args()}

    def __repr__(self):
        # Only what differs from the defaults, the leading arguments positionally: Conv(32, 3, stride=2).
        params = list(inspect.signature(type(self).__init__).parameters.values())[1:]
        parts, positional = [], True
        for p in params:
            value = self._args().get(p.name, p.default)
            if p.default is not inspect.Parameter.empty:
                positional = False  # only the required leading arguments go positionally
                if value == p.default:
                    continue
            parts.append(repr(value) if positional else f"{p.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    @property
    def has_params(self) -> bool:
        return bool(self.param_names)

    def _p(self, run, local):
        return run.params[self.param_names[local]]

    def _grad(self, run, local, value):
        run.grads[self.param_names[local]] = value


def _needs_images(block, in_shape):
    if len(in_shape) != 3:
        raise ValueError(f"expects images (C, H, W), got per-sample shape {in_shape}")


# --------------------------------------------------------------------------- parameterised blocks


class Affine(Block):
    """Fully connected: (N, *in_shape) is flattened to (N, D); out = x @ W + b, (N, out_dim)."""

    def __init__(self, out_dim):
        super().__init__()
        self.out_dim = check_positive_int(out_dim, "Affine: out_dim")

    def _args(self):
        return {"out_dim": self.out_dim}

    def build(self, in_shape, builder):
        fan_in = math.prod(in_shape)
        builder.weight(self, "W", (fan_in, self.out_dim), fan_in)
        builder.constant(self, "b", (self.out_dim,), 0.0)
        return (self.out_dim,)

    def forward(self, x, run):
        return L.affine_forward(x, self._p(run, "W"), self._p(run, "b"))

    def backward(self, dout, cache, run, need_dx):
        dx, dw, db = L.affine_backward(dout, cache, need_dx)
        self._grad(run, "W", dw)
        self._grad(run, "b", db)
        return dx


class Conv(Block):
    """2-D convolution, F = num_filters square filters of filter_size, zero padding pad."""

    def __init__(self, num_filters, filter_size, stride=1, pad=None):
        super().__init__()
        self.num_filters = check_positive_int(num_filters, "Conv: num_filters")
        self.filter_size = check_positive_int(filter_size, "Conv: filter_size")
        self.stride = check_positive_int(stride, "Conv: stride")
        if pad is None:
            if self.stride == 1 and self.filter_size % 2 == 0:
                raise ValueError(f"Conv: pad=None means 'same', which needs an odd filter_size at stride 1, "
                                 f"got filter_size={self.filter_size}; give pad explicitly")
            self.pad_arg, self.pad = None, (self.filter_size - 1) // 2
        else:
            self.pad_arg = self.pad = check_positive_int(pad, "Conv: pad", minimum=0)
        self.conv_param = {"stride": self.stride, "pad": self.pad}

    def _args(self):
        return {"num_filters": self.num_filters, "filter_size": self.filter_size, "stride": self.stride,
                "pad": self.pad_arg}

    def build(self, in_shape, builder):
        _needs_images(self, in_shape)
        C, H, W = in_shape
        k, s, p = self.filter_size, self.stride, self.pad
        if H + 2 * p < k or W + 2 * p < k:
            raise ValueError(f"the {k}x{k} filter is larger than the padded input {H + 2 * p}x{W + 2 * p}")
        builder.weight(self, "W", (self.num_filters, C, k, k), C * k * k)
        builder.constant(self, "b", (self.num_filters,), 0.0)
        return (self.num_filters, (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1)

    def forward(self, x, run):
        return L.conv_forward(x, self._p(run, "W"), self._p(run, "b"), self.conv_param)

    def backward(self, dout, cache, run, need_dx):
        dx, dw, db = L.conv_backward(dout, cache, need_dx=need_dx)
        self._grad(run, "W", dw)
        self._grad(run, "b", db)
        return dx


class BatchNorm(Block):
    """Batch normalisation: per feature of (D,) inputs, per channel of (C, H, W) maps
    (spatial). Train mode normalises by the batch's statistics and updates the
    running ones (buffers running_mean / running_var, created by the first training
    step); test mode uses the running statistics."""

    def __init__(self, momentum=0.9, eps=1e-5):
        super().__init__()
        self.momentum = check_float_in(momentum, "BatchNorm: momentum", 0.0, 1.0)
        self.eps = check_float_in(eps, "BatchNorm: eps", 0.0, math.inf, lo_open=True)

    def _args(self):
        return {"momentum": self.momentum, "eps": self.eps}

    def build(self, in_shape, builder):
        if len(in_shape) not in (1, 3):
            raise ValueError(f"expects features (D,) or images (C, H, W), got per-sample shape {in_shape}")
        width = in_shape[0]
        builder.constant(self, "gamma", (width,), 1.0)
        builder.constant(self, "beta", (width,), 0.0)
        builder.buffer(self, "running_mean", (width,))
        builder.buffer(self, "running_var", (width,))
        self._spatial = len(in_shape) == 3
        return in_shape

    def forward(self, x, run):
        names = self.buffer_names
        bn_param = {"mode": run.mode, "momentum": self.momentum, "eps": self.eps}
        for local, name in names.items():
            if name in run.buffers:
                bn_param[local] = run.buffers[name]
        fn = L.spatial_batchnorm_forward if self._spatial else L.batchnorm_forward
        out, cache = fn(x, self._p(run, "gamma"), self._p(run, "beta"), bn_param)
        for local, name in names.items():
            run.buffers[name] = bn_param[local]
        return out, cache

    def backward(self, dout, cache, run, need_dx):
        fn = L.spatial_batchnorm_backward if self._spatial else L.batchnorm_backward
        dx, dgamma, dbeta = fn(dout, cache)
        self._grad(run, "gamma", dgamma)
        self._grad(run, "beta", dbeta)
        return dx


class LayerNorm(Block):
    """Layer normalisation over all features of each sample (PyTorch's
    ``LayerNorm(in_shape)``): gamma and beta have the per-sample shape."""

    def __init__(self, eps=1e-5):
        super().__init__()
        self.eps = check_float_in(eps, "LayerNorm: eps", 0.0, math.inf, lo_open=True)

    def _args(self):
        return {"eps": self.eps}

    def build(self, in_shape, builder):
        builder.constant(self, "gamma", in_shape, 1.0)
        builder.constant(self, "beta", in_shape, 0.0)
        return in_shape

    def forward(self, x, run):
        xp = namespace(x)
        flat = (x.shape[0], math.prod(self.in_shape))
        gamma, beta = self._p(run, "gamma"), self._p(run, "beta")
        out, cache = L.layernorm_forward(xp.reshape(x, flat), xp.reshape(gamma, flat[1:]),
                                         xp.reshape(beta, flat[1:]), {"eps": self.eps})
        return xp.reshape(out, x.shape), (cache, tuple(x.shape))

    def backward(self, dout, cache, run, need_dx):
        xp = namespace(dout)
        ln_cache, shape = cache
        dx, dgamma, dbeta = L.layernorm_backward(xp.reshape(dout, (shape[0], -1)), ln_cache)
        self._grad(run, "gamma", xp.reshape(dgamma, self.in_shape))
        self._grad(run, "beta", xp.reshape(dbeta, self.in_shape))
        return xp.reshape(dx, shape)


class GroupNorm(Block):
    """Group normalisation of (C, H, W) maps: C split into ``groups`` groups, each
    normalised over its channels and positions; gamma, beta (C,)."""

    def __init__(self, groups, eps=1e-5):
        super().__init__()
        self.groups = check_positive_int(groups, "GroupNorm: groups")
        self.eps = check_float_in(eps, "GroupNorm: eps", 0.0, math.inf, lo_open=True)

    def _args(self):
        return {"groups": self.groups, "eps": self.eps}

    def build(self, in_shape, builder):
        _needs_images(self, in_shape)
        if in_shape[0] % self.groups:
            raise ValueError(f"groups={self.groups} does not divide the {in_shape[0]} channels")
        builder.constant(self, "gamma", (in_shape[0],), 1.0)
        builder.constant(self, "beta", (in_shape[0],), 0.0)
        return in_shape

    def forward(self, x, run):
        xp = namespace(x)
        bshape = (1, self.in_shape[0], 1, 1)
        return L.spatial_groupnorm_forward(x, xp.reshape(self._p(run, "gamma"), bshape),
                                           xp.reshape(self._p(run, "beta"), bshape), self.groups,
                                           {"eps": self.eps})

    def backward(self, dout, cache, run, need_dx):
        xp = namespace(dout)
        dx, dgamma, dbeta = L.spatial_groupnorm_backward(dout, cache)
        self._grad(run, "gamma", xp.reshape(dgamma, (-1,)))
        self._grad(run, "beta", xp.reshape(dbeta, (-1,)))
        return dx


# --------------------------------------------------------------------------- blocks without parameters


class ReLU(Block):
    """max(x, 0), elementwise."""

    def forward(self, x, run):
        return L.relu_forward(x)

    def backward(self, dout, cache, run, need_dx):
        return L.relu_backward(dout, cache)


class Dropout(Block):
    """Inverted dropout keeping each unit with probability keep_ratio (0 < keep_ratio
    <= 1); identity in test mode. Seeded models draw the same masks on every backend."""

    def __init__(self, keep_ratio):
        super().__init__()
        self.keep_ratio = check_float_in(keep_ratio, "Dropout: keep_ratio", 0.0, 1.0, lo_open=True)

    def _args(self):
        return {"keep_ratio": self.keep_ratio}

    def build(self, in_shape, builder):
        self.stream = builder.dropout_stream()  # which masks are this block's (Model._dropout_seed)
        return in_shape

    def forward(self, x, run):
        seed = run.dropout_seed(self.stream) if run.mode == "train" and self.keep_ratio != 1.0 else None
        return L.dropout_forward(x, {"p": self.keep_ratio, "mode": run.mode, "seed": seed})

    def backward(self, dout, cache, run, need_dx):
        return L.dropout_backward(dout, cache)


class _Pool(Block):
    forward_fn = backward_fn = None

    def __init__(self, size, stride=None):
        super().__init__()
        self.size = check_positive_int(size, f"{type(self).__name__}: size")
        self.stride_arg = None if stride is None else check_positive_int(stride, f"{type(self).__name__}: stride")
        self.stride = self.size if stride is None else self.stride_arg
        self.pool_param = {"pool_height": self.size, "pool_width": self.size, "stride": self.stride}

    def _args(self):
        return {"size": self.size, "stride": self.stride_arg}

    def build(self, in_shape, builder):
        _needs_images(self, in_shape)
        C, H, W = in_shape
        if H < self.size or W < self.size:
            raise ValueError(f"the {self.size}x{self.size} window is larger than the input {H}x{W}")
        return (C, (H - self.size) // self.stride + 1, (W - self.size) // self.stride + 1)

    def forward(self, x, run):
        return type(self).forward_fn(x, self.pool_param)

    def backward(self, dout, cache, run, need_dx):
        return type(self).backward_fn(dout, cache)


class MaxPool(_Pool):
    """Max over size x size windows every stride (default: size) positions."""

    forward_fn, backward_fn = L.max_pool_forward, L.max_pool_backward


class AvgPool(_Pool):
    """Mean over size x size windows every stride (default: size) positions."""

    forward_fn, backward_fn = L.avg_pool_forward, L.avg_pool_backward


class GlobalAvgPool(Block):
    """(N, C, H, W) -> (N, C): each map's mean.

    Its own two operations rather than an H x W average pool: a mean over (H, W),
    and a backward that is one broadcast product (the windowed-mean gradient's
    slice writes cost JAX eager ~8 ms per step here for nothing)."""

    def build(self, in_shape, builder):
        _needs_images(self, in_shape)
        return (in_shape[0],)

    def forward(self, x, run):
        xp = namespace(x)
        return xp.mean(x, axis=(2, 3)), (tuple(x.shape), x.dtype, array_origin(xp, x))

    def backward(self, dout, cache, run, need_dx):
        shape, dtype, origin = cache
        xp = check_dout(dout, "GlobalAvgPool.backward", shape[:2], dtype, origin=origin)
        share = xp.full((1, 1, *shape[2:]), 1.0 / (shape[2] * shape[3]), dtype=dtype, device=origin[1])
        return xp.reshape(dout, (*shape[:2], 1, 1)) * share


class Flatten(Block):
    """(N, *in_shape) -> (N, D), D the product of in_shape."""

    def build(self, in_shape, builder):
        return (math.prod(in_shape),)

    def forward(self, x, run):
        xp = namespace(x)
        return xp.reshape(x, (x.shape[0], -1)), tuple(x.shape)

    def backward(self, dout, cache, run, need_dx):
        return namespace(dout).reshape(dout, cache)


# --------------------------------------------------------------------------- residual


class Residual(Block):
    """out = f(x) + x, f the chain of ``blocks``. When f changes the shape, a
    ``projection=True`` residual maps x to it with a 1x1 convolution (stride = the
    spatial reduction; images) or an affine map (features), parameters
    ``proj.W`` / ``proj.b``; without it a shape change is an error."""

    def __init__(self, *blocks, projection=False):
        super().__init__()
        if len(blocks) == 1 and isinstance(blocks[0], (list, tuple)):
            blocks = tuple(blocks[0])
        if not blocks:
            raise ValueError("Residual: expected at least one block")
        self.blocks = [_as_block(b, f"Residual: blocks[{i}]") for i, b in enumerate(blocks)]
        self.projection = check_bool(projection, "Residual: projection")
        self.proj = None

    def _args(self):
        return {"blocks": [b.config() for b in self.blocks], "projection": self.projection}

    def __repr__(self):
        inner = ", ".join(map(repr, self.blocks))
        return f"Residual({inner}{', projection=True' if self.projection else ''})"

    @property
    def has_params(self):
        return any(b.has_params for b in self.blocks) or self.proj is not None

    def build(self, in_shape, builder):
        out_shape = builder.build_chain(self.blocks, in_shape)
        if out_shape == in_shape:
            return out_shape
        if not self.projection:
            raise ValueError(f"its blocks map {in_shape} to {out_shape}: x + f(x) needs the same shape "
                             "(use Residual(..., projection=True) for a learned 1x1 projection)")
        self.proj = _projection(in_shape, out_shape)
        with builder.at("proj"):
            builder.build_one(self.proj, in_shape)
        return out_shape

    def forward(self, x, run):
        h, caches = chain_forward(self.blocks, x, run)
        skip, proj_cache = (x, None) if self.proj is None else self.proj.forward(x, run)
        return h + skip, (caches, proj_cache)

    def backward(self, dout, cache, run, need_dx):
        caches, proj_cache = cache
        dx = chain_backward(self.blocks, dout, caches, run, need_dx)
        if self.proj is None:
            return dx + dout if need_dx else None
        dskip = self.proj.backward(dout, proj_cache, run, need_dx)
        return dx + dskip if need_dx else None


def _projection(in_shape, out_shape):
    if len(in_shape) == 1 and len(out_shape) == 1:
        return Affine(out_shape[0])
    if len(in_shape) == 3 and len(out_shape) == 3:
        (_, H, W), (F, Ho, Wo) = in_shape, out_shape
        stride = -(-H // Ho)  # the smallest s with ceil(H / s) == Ho (5 -> 3 is stride 2)
        if (H - 1) // stride + 1 == Ho and (W - 1) // stride + 1 == Wo:
            return Conv(F, 1, stride=stride, pad=0)
    raise ValueError(f"no 1x1 projection maps {in_shape} to {out_shape} (a strided 1x1 convolution "
                     "needs image shapes whose sizes shrink by one integer stride)")


# --------------------------------------------------------------------------- config


BLOCK_TYPES = {c.__name__: c for c in (Affine, Conv, MaxPool, AvgPool, GlobalAvgPool, BatchNorm, LayerNorm,
                                       GroupNorm, ReLU, Dropout, Flatten, Residual)}


def block_from_config(config, where="block"):
    """A block from its ``config()`` dict (what a checkpoint manifest stores)."""
    if not isinstance(config, dict) or config.get("block") not in BLOCK_TYPES:
        got = config.get("block") if isinstance(config, dict) else config
        raise ValueError(f"{where}: expected a block config {{'block': one of {sorted(BLOCK_TYPES)}, ...}}, "
                         f"got {got!r}")
    args = {k: v for k, v in config.items() if k != "block"}
    cls = BLOCK_TYPES[config["block"]]
    # Unknown keys by name, with a did-you-mean (a typo in a hand-edited manifest).
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "blocks")]
    check_keys(args, f"{where} ({cls.__name__})", accepted + (["blocks"] if cls is Residual else []))
    if cls is Residual:
        inner = [block_from_config(b, f"{where}.blocks[{i}]") for i, b in enumerate(args.pop("blocks", []))]
    try:
        return Residual(*inner, **args) if cls is Residual else cls(**args)
    except TypeError as e:  # a required argument missing
        raise ValueError(f"{where}: {e}") from None


def _as_block(b, where):
    if isinstance(b, Block):
        return b
    if isinstance(b, dict):
        return block_from_config(b, where)
    raise TypeError(f"{where}: expected a portnn block (e.g. portnn.blocks.Conv(32, 3)), got {type(b).__name__}")


# --------------------------------------------------------------------------- building and running chains


class Builder:
    """Builds a model's blocks: names their parameters and buffers, draws weights.

    weight_init : "he" (N(0, 2 / fan_in)) or a number (N(0, number^2))
    normal(scale, shape) : the model's seeded host draw (weights are drawn in
        block order, so a seed gives the same weights on every backend)
    name(path, local) : the model's name of a parameter (default "0.W", "3.1.gamma")
    buffer_name(path, local) : the same for buffers
    After building: ``params`` (name -> ("normal", host array) or ("constant",
    shape, value)), ``weights`` (the names L2 applies to), ``buffers`` (name -> shape).
    """

    def __init__(self, weight_init, normal, name=None, buffer_name=None):
        self.weight_init = weight_init
        self._normal = normal
        self._name = name or (lambda path, local: ".".join([*map(str, path), local]))
        self._buffer_name = buffer_name or self._name
        self.path = []
        self.params, self.weights, self.buffers = {}, [], {}
        self._streams = 0

    @contextlib.contextmanager
    def at(self, key):
        self.path.append(key)
        try:
            yield
        finally:
            self.path.pop()

    def _register(self, block, local, entry):
        name = self._name(tuple(self.path), local)
        if name in self.params:
            raise ValueError(f"two parameters are named {name!r}")
        self.params[name] = entry
        block.param_names[local] = name
        return name

    def weight(self, block, local, shape, fan_in):
        scale = math.sqrt(2.0 / fan_in) if self.weight_init == "he" else self.weight_init
        self.weights.append(self._register(block, local, ("normal", self._normal(scale, shape))))

    def constant(self, block, local, shape, value):
        self._register(block, local, ("constant", tuple(shape), value))

    def buffer(self, block, local, shape):
        name = self._buffer_name(tuple(self.path), local)
        self.buffers[name] = tuple(shape)
        block.buffer_names[local] = name

    def dropout_stream(self):
        self._streams += 1
        return self._streams

    def build_one(self, block, in_shape):
        block.in_shape = tuple(in_shape)
        block.out_shape = tuple(block.build(block.in_shape, self))
        return block.out_shape

    def build_chain(self, blocks, in_shape):
        """Build each block in turn (copies of them already: see ``copy_blocks``);
        a shape that does not fit names the block by its path."""
        shape = tuple(in_shape)
        for i, block in enumerate(blocks):
            with self.at(i):
                try:
                    shape = self.build_one(block, shape)
                except ValueError as e:
                    if str(e).startswith("block "):
                        raise
                    where = ".".join(map(str, self.path))
                    raise ValueError(f"block {where} ({block!r}) does not fit input shape {shape}: {e}") from None
        return shape


def copy_blocks(blocks, where="blocks"):
    """Fresh copies of ``blocks`` (Block objects or config dicts), for one model to build."""
    if isinstance(blocks, (str, bytes, Block)) or not hasattr(blocks, "__iter__"):
        raise TypeError(f"{where}: expected a list of blocks, got {type(blocks).__name__}")
    out = [copy.deepcopy(_as_block(b, f"{where}[{i}]")) for i, b in enumerate(blocks)]
    if not out:
        raise ValueError(f"{where}: expected at least one block")
    return out


class Run:
    """One pass through a model's blocks: what a block's forward/backward reads.

    mode : "train" | "test"; params : name -> array; buffers : name -> array (batchnorm
    stores its new running statistics here); grads : name -> array (filled by the
    backward); dropout_seed(stream) : the seed of a dropout block's mask this step.
    """

    def __init__(self, mode, params, buffers, dropout_seed):
        self.mode, self.params, self.buffers, self.dropout_seed = mode, params, buffers, dropout_seed
        self.grads = {}


def _execution_order(blocks):
    """Indices of ``blocks`` in the order to run them: a ReLU directly followed by a
    MaxPool runs after it. max commutes with the monotone relu, so outputs and
    gradients are identical (where a window's max is <= 0 neither order passes a
    gradient; elsewhere the first maximum is the same element), and the relu runs
    on the pooled map (4x smaller for a 2x2 pool)."""
    order = list(range(len(blocks)))
    i = 0
    while i + 1 < len(order):
        if type(blocks[order[i]]) is ReLU and type(blocks[order[i + 1]]) is MaxPool:
            order[i], order[i + 1] = order[i + 1], order[i]
            i += 2
        else:
            i += 1
    return order


def chain_forward(blocks, x, run):
    """x through ``blocks`` in turn -> (out, caches: (index, cache) in run order)."""
    caches = []
    for i in _execution_order(blocks):
        x, cache = blocks[i].forward(x, run)
        caches.append((i, cache))
    return x, caches


def chain_backward(blocks, dout, caches, run, need_dx=True):
    """The gradients of ``chain_forward``'s run: parameter gradients into run.grads,
    returns dx (None when need_dx is False: then the blocks before the first one
    with parameters are not run backwards at all, and that one skips its dx)."""
    first = 0
    if not need_dx:
        with_params = [k for k, (i, _) in enumerate(caches) if blocks[i].has_params]
        if not with_params:
            return None
        first = with_params[0]
    for k in range(len(caches) - 1, first - 1, -1):
        i, cache = caches[k]
        dout = blocks[i].backward(dout, cache, run, need_dx or k > first)
    return dout if need_dx else None
