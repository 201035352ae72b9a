"""Batch, layer, spatial-batch and group normalisation on ONE shared core.

Every normaliser is the same two steps:
  1. standardise x over some axes (the "statistics axes"):
     xhat = (x - mean) / sqrt(var + eps), var biased (correction=0)
     (``_normalize`` in train mode; batchnorm in test mode uses its running
     statistics instead);
  2. scale and shift: out = gamma * xhat + beta, gamma/beta broadcast over the
     "parameter axes" (one line in each forward).
The backward reverses them: ``_scale_shift_backward`` gives dxhat, dgamma and
dbeta, and ``_normalize_backward`` turns dxhat into dx (the closed form, two
reductions). Batchnorm's statistics axes ARE its parameter axes, so
``_batchnorm_backward`` folds both into one expression that reuses dgamma and
dbeta. The four layers only differ in which axes those are (and in a reshape
for group norm), so the maths exist once, below.

| layer              | x            | statistics over        | gamma/beta    |
|--------------------|--------------|------------------------|---------------|
| batchnorm          | (N, D)       | N                      | (D,)          |
| layernorm          | (N, D)       | D                      | (D,)          |
| spatial batchnorm  | (N, C, H, W) | N, H, W                | (C,)          |
| spatial groupnorm  | (N, C, H, W) | C/G channels, H, W     | (1, C, 1, 1)  |
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import array_api_compat as aac

from .._checks import (
    check_array_beside,
    check_cache,
    check_dict,
    check_dout,
    check_float_array,
    check_float_in,
    check_int,
    check_keys,
    check_same_dtype,
)
from ..backends import namespace

#: The keys each parameter dict may hold (any other is a ValueError: a typo such as
#: 'epsilon' for 'eps' would otherwise be ignored). Batchnorm writes its running
#: statistics back into bn_param; layer and group norm accept (and ignore) 'mode',
#: so one loop can set the mode of every normalisation layer of a model.
BN_PARAM_KEYS = ("mode", "eps", "momentum", "running_mean", "running_var")
LN_PARAM_KEYS = ("eps", "mode")
GN_PARAM_KEYS = ("eps", "mode")

# --------------------------------------------------------------------------- caches


class BatchNormCache(NamedTuple):
    """batchnorm / spatial batchnorm forward -> backward."""

    mode: str  # "train" (batch statistics) or "test" (running statistics, constants)
    xhat: Any  # x's shape: the standardised input
    inv_std: Any  # broadcast shape (1, D) or (1, C, 1, 1): 1 / sqrt(var + eps)
    gamma_b: Any  # gamma reshaped to the broadcast shape
    stat_axes: tuple  # axes the statistics (and dgamma, dbeta) reduce over
    param_shape: tuple  # gamma's own shape, that of dgamma and dbeta


class LayerNormCache(NamedTuple):
    """layernorm forward -> backward."""

    xhat: Any  # (N, D): the standardised input
    inv_std: Any  # (N, 1): per-sample 1 / sqrt(var + eps)
    gamma_b: Any  # (1, D): gamma reshaped for broadcasting


class GroupNormCache(NamedTuple):
    """spatial groupnorm forward -> backward."""

    xhat: Any  # (N, C, H, W): the standardised input
    inv_std: Any  # (N, G, 1): per-sample, per-group 1 / sqrt(var + eps)
    gamma: Any  # (1, C, 1, 1)
    groups: int  # G


# --------------------------------------------------------------------------- core


def _normalize(xp, x, axes, eps):
    """x -> (xhat, mean, var, inv_std); the statistics keep dims for broadcasting."""
    mean = xp.mean(x, axis=axes, keepdims=True)
    centered = x - mean
    var = xp.mean(centered * centered, axis=axes, keepdims=True)
    inv_std = 1.0 / xp.sqrt(var + eps)
    return centered * inv_std, mean, var, inv_std


def _normalize_backward(xp, dxhat, xhat, inv_std, axes):
    """Gradient through xhat = (x - mean(x)) * inv_std(x), statistics over ``axes``.

    dx = inv_std * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    (the closed form: the mean and variance paths folded into two reductions).
    """
    return inv_std * (
        dxhat
        - xp.mean(dxhat, axis=axes, keepdims=True)
        - xhat * xp.mean(dxhat * xhat, axis=axes, keepdims=True)
    )


def _scale_shift_backward(xp, dout, xhat, gamma_b, param_axes):
    """Gradients of out = gamma_b * xhat + beta_b: (dxhat, dgamma, dbeta), the last
    two summed over ``param_axes`` with dims kept (callers reshape to their shape)."""
    dgamma = xp.sum(dout * xhat, axis=param_axes, keepdims=True)
    dbeta = xp.sum(dout, axis=param_axes, keepdims=True)
    return dout * gamma_b, dgamma, dbeta


def _check_params(xp, x, gamma, beta, expected_shape, what):
    check_float_array(xp, gamma, "gamma")
    check_float_array(xp, beta, "beta")
    for name, p in (("gamma", gamma), ("beta", beta)):
        if tuple(p.shape) != expected_shape:
            raise ValueError(
                f"{name}: expected shape {expected_shape} ({what} of x with shape "
                f"{tuple(x.shape)}), got {tuple(p.shape)}"
            )
        check_same_dtype("x", x, name, p)


def _eps(param):
    return check_float_in(param.get("eps", 1e-5), "eps", 0.0, math.inf, lo_open=True)


def _norm_param(param, name, accepted):
    """ln_param / gn_param: None or a dict of known keys -> a dict."""
    param = check_dict(param, name, "a dict (optional 'eps') or None", allow_none=True)
    check_keys(param, name, accepted)
    return param


# --------------------------------------------------------------------------- batch norm


def _batchnorm_forward(x, gamma, beta, bn_param, stat_axes, bshape):
    """Shared batchnorm body: x normalised over stat_axes with per-feature running stats.

    bshape is the broadcast shape of one feature vector, e.g. (1, D) or (1, C, 1, 1).
    """
    xp = namespace(x, gamma, beta)
    check_dict(bn_param, "bn_param", "a dict with 'mode' ('train' or 'test')")
    check_keys(bn_param, "bn_param", BN_PARAM_KEYS)
    mode = bn_param.get("mode")
    if mode not in ("train", "test"):
        raise ValueError(f"bn_param['mode']: expected 'train' or 'test', got {mode!r}")
    eps = _eps(bn_param)
    momentum = check_float_in(bn_param.get("momentum", 0.9), "momentum", 0.0, 1.0)
    nfeat = math.prod(bshape)
    running_mean = bn_param.get("running_mean")
    running_var = bn_param.get("running_var")
    if mode == "test" and (running_mean is None or running_var is None):
        # Zeros would standardise by sqrt(eps): outputs ~300x too large, silently.
        given = [k for k, r in (("running_mean", running_mean), ("running_var", running_var)) if r is not None]
        got = f"only {given[0]!r}" if given else "neither"
        raise ValueError(
            "bn_param: expected 'running_mean' and 'running_var' in test mode, got "
            f"{got}: the running statistics are missing (run in train mode first, "
            "or pass running_mean/running_var)"
        )
    for name, r in (("running_mean", running_mean), ("running_var", running_var)):
        if r is None:
            continue
        key = f"bn_param['{name}']"
        check_array_beside(x, r, key, "an array of x's backend and device")
        if tuple(r.shape) != (nfeat,):
            raise ValueError(f"{key}: expected shape ({nfeat},), got {tuple(r.shape)}")
        check_same_dtype("x", x, key, r)
    # Train mode only from here on may create them (the first train-mode call).
    dev = aac.device(x)
    if running_mean is None:
        running_mean = xp.zeros((nfeat,), dtype=x.dtype, device=dev)
    if running_var is None:
        running_var = xp.zeros((nfeat,), dtype=x.dtype, device=dev)
    gamma_b = xp.reshape(gamma, bshape)
    beta_b = xp.reshape(beta, bshape)

    if mode == "train":
        if math.prod(x.shape[i] for i in stat_axes) == 0:
            raise ValueError(f"x: batchnorm in train mode needs a non-empty batch, got shape {tuple(x.shape)}")
        xhat, mean, var, inv_std = _normalize(xp, x, stat_axes, eps)
        running_mean = momentum * running_mean + (1.0 - momentum) * xp.reshape(mean, (nfeat,))
        running_var = momentum * running_var + (1.0 - momentum) * xp.reshape(var, (nfeat,))
    else:
        inv_std = 1.0 / xp.sqrt(xp.reshape(running_var, bshape) + eps)
        xhat = (x - xp.reshape(running_mean, bshape)) * inv_std
    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var
    out = gamma_b * xhat + beta_b
    return out, BatchNormCache(mode=mode, xhat=xhat, inv_std=inv_std, gamma_b=gamma_b,
                               stat_axes=stat_axes, param_shape=tuple(gamma.shape))


def _batchnorm_backward(dout, cache, fn, forward):
    check_cache(cache, fn, BatchNormCache, forward)
    xhat, inv_std, gamma_b, stat_axes = cache.xhat, cache.inv_std, cache.gamma_b, cache.stat_axes
    xp = check_dout(dout, fn, xhat.shape, xhat.dtype, xhat)
    dgamma = xp.sum(dout * xhat, axis=stat_axes, keepdims=True)
    dbeta = xp.sum(dout, axis=stat_axes, keepdims=True)
    if cache.mode == "train":
        # _normalize_backward with dxhat = gamma * dout, folded: in batch norm the
        # statistics axes ARE the parameter axes, so its two reductions are
        # gamma * dbeta / m and gamma * dgamma / m, already computed above. Four
        # full-size passes instead of eight (the layer is overhead-bound at N=200).
        m = math.prod(xhat.shape[i] for i in stat_axes)
        dx = (gamma_b * inv_std) * (dout - dbeta * (1.0 / m) - xhat * (dgamma * (1.0 / m)))
    else:  # statistics are constants in test mode
        dx = dout * (gamma_b * inv_std)
    return dx, xp.reshape(dgamma, cache.param_shape), xp.reshape(dbeta, cache.param_shape)


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalisation of (N, D) features.

    Inputs
      x : (N, D) float; gamma, beta : (D,) same dtype
      bn_param : dict with 'mode' ('train' | 'test', required), 'eps' (1e-5),
        'momentum' (0.9), 'running_mean' / 'running_var' ((D,) arrays of x's
        backend, device and dtype; created as zeros by the first train-mode call
        and stored back). Train mode uses batch statistics (biased variance) and
        updates running = momentum * running + (1 - momentum) * batch; test mode
        uses the running statistics, and raises a ValueError without them. Any
        other key is a ValueError.
    Returns out : (N, D), cache
    """
    xp = namespace(x, gamma, beta)
    check_float_array(xp, x, "x", ndim=2)
    _check_params(xp, x, gamma, beta, (x.shape[1],), "one per feature")
    return _batchnorm_forward(x, gamma, beta, bn_param, (0,), (1, x.shape[1]))


def batchnorm_backward(dout, cache):
    """Gradients of batchnorm_forward: dout (N, D) -> dx (N, D), dgamma (D,), dbeta (D,).

    dout must have x's shape and dtype; cache is the forward's BatchNormCache.
    Uses the closed-form expression (two reductions), not a step-by-step graph.
    """
    return _batchnorm_backward(dout, cache, "batchnorm_backward", "batchnorm_forward")


def batchnorm_backward_alt(dout, cache):
    """batchnorm_backward under the course's second name.

    The course API has a "graph" backward and a simplified "alt" one. portnn keeps
    one implementation (docs/design.md, rule 2); both names compute the same closed
    form (this one only names itself in error messages).
    """
    return _batchnorm_backward(dout, cache, "batchnorm_backward_alt", "batchnorm_forward")


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalisation of (N, C, H, W) maps, statistics per channel over N, H, W.

    gamma, beta : (C,); bn_param as in batchnorm_forward (running stats (C,)).
    Returns out : (N, C, H, W), cache
    """
    xp = namespace(x, gamma, beta)
    check_float_array(xp, x, "x", ndim=4)
    _check_params(xp, x, gamma, beta, (x.shape[1],), "one per channel")
    return _batchnorm_forward(x, gamma, beta, bn_param, (0, 2, 3), (1, x.shape[1], 1, 1))


def spatial_batchnorm_backward(dout, cache):
    """dout (N, C, H, W) -> dx (N, C, H, W), dgamma (C,), dbeta (C,)."""
    return _batchnorm_backward(dout, cache, "spatial_batchnorm_backward", "spatial_batchnorm_forward")


# --------------------------------------------------------------------------- layer norm


def layernorm_forward(x, gamma, beta, ln_param):
    """Layer normalisation: each sample's D features standardised on their own.

    x : (N, D) float; gamma, beta : (D,); ln_param : dict or None, optional 'eps'
    (1e-5) and 'mode' (accepted and ignored: the same in train and test mode, no
    running statistics); any other key is a ValueError.
    Returns out : (N, D), cache
    """
    xp = namespace(x, gamma, beta)
    check_float_array(xp, x, "x", ndim=2)
    _check_params(xp, x, gamma, beta, (x.shape[1],), "one per feature")
    eps = _eps(_norm_param(ln_param, "ln_param", LN_PARAM_KEYS))
    xhat, _, _, inv_std = _normalize(xp, x, (1,), eps)
    gamma_b = xp.reshape(gamma, (1, -1))
    out = gamma_b * xhat + xp.reshape(beta, (1, -1))
    return out, LayerNormCache(xhat=xhat, inv_std=inv_std, gamma_b=gamma_b)


def layernorm_backward(dout, cache):
    """dout (N, D) -> dx (N, D), dgamma (D,), dbeta (D,)."""
    check_cache(cache, "layernorm_backward", LayerNormCache, "layernorm_forward")
    xhat = cache.xhat
    xp = check_dout(dout, "layernorm_backward", xhat.shape, xhat.dtype, xhat)
    dxhat, dgamma, dbeta = _scale_shift_backward(xp, dout, xhat, cache.gamma_b, (0,))
    dx = _normalize_backward(xp, dxhat, xhat, cache.inv_std, (1,))
    return dx, xp.reshape(dgamma, (-1,)), xp.reshape(dbeta, (-1,))


# --------------------------------------------------------------------------- group norm


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    """Group normalisation: each sample's C channels split into G groups, each group
    standardised over its C/G channels and all H, W positions.

    x : (N, C, H, W) float; gamma, beta : (1, C, 1, 1); G : int dividing C;
    gn_param : dict or None, optional 'eps' (1e-5) and 'mode' (accepted and
    ignored); any other key is a ValueError.
    Returns out : (N, C, H, W), cache
    """
    xp = namespace(x, gamma, beta)
    check_float_array(xp, x, "x", ndim=4)
    n, c, h, w = x.shape
    G = check_int(G, "G", minimum=1, expected=f"a positive integer dividing C={c}")
    if c % G:
        raise ValueError(f"G: expected a positive integer dividing C={c}, got {G}")
    _check_params(xp, x, gamma, beta, (1, c, 1, 1), "one per channel")
    eps = _eps(_norm_param(gn_param, "gn_param", GN_PARAM_KEYS))
    xg = xp.reshape(x, (n, G, (c // G) * h * w))
    xhat_g, _, _, inv_std = _normalize(xp, xg, (2,), eps)
    xhat = xp.reshape(xhat_g, x.shape)
    out = gamma * xhat + beta
    return out, GroupNormCache(xhat=xhat, inv_std=inv_std, gamma=gamma, groups=G)


def spatial_groupnorm_backward(dout, cache):
    """dout (N, C, H, W) -> dx (N, C, H, W), dgamma (1, C, 1, 1), dbeta (1, C, 1, 1)."""
    check_cache(cache, "spatial_groupnorm_backward", GroupNormCache, "spatial_groupnorm_forward")
    xhat = cache.xhat
    xp = check_dout(dout, "spatial_groupnorm_backward", xhat.shape, xhat.dtype, xhat)
    n = dout.shape[0]
    dxhat, dgamma, dbeta = _scale_shift_backward(xp, dout, xhat, cache.gamma, (0, 2, 3))
    grouped = (n, cache.groups, -1)
    dx_g = _normalize_backward(
        xp, xp.reshape(dxhat, grouped), xp.reshape(xhat, grouped), cache.inv_std, (2,)
    )
    return xp.reshape(dx_g, dout.shape), dgamma, dbeta
