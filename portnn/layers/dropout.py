"""Inverted dropout with masks that are identical on every backend for a given seed."""

from __future__ import annotations

from typing import Any, NamedTuple

import array_api_compat as aac

from .. import random as prandom
from .._checks import (
    array_origin,
    check_cache,
    check_dict,
    check_dout,
    check_float_array,
    check_float_in,
    check_keys,
)
from ..backends import namespace

__all__ = ["dropout_forward", "dropout_backward", "DropoutCache", "DROPOUT_PARAM_KEYS"]

#: The keys dropout_param may hold (any other is a ValueError: a typo would be ignored).
DROPOUT_PARAM_KEYS = ("p", "mode", "seed")


class DropoutCache(NamedTuple):
    """dropout_forward -> dropout_backward."""

    dropout_param: dict  # the forward's dropout_param
    mask: Any  # x's shape and dtype, 1/p scale included; None in test mode or with p = 1
    shape: tuple  # the forward's output shape (x's)
    dtype: Any  # the forward's dtype (x's)
    origin: Any  # (namespace, device) of x: without a mask the cache holds no array to check dout against


def dropout_forward(x, dropout_param):
    """Inverted dropout.

    Inputs
      x : any shape, float
      dropout_param : dict with
        'p'    : probability of KEEPING each unit, 0 < p <= 1 (required)
        'mode' : 'train' (drop and rescale by 1/p) or 'test' (identity)
        'seed' : optional int; the same seed and shape give the same mask on every
                 backend (the mask comes from portnn.random's counter-based
                 generator, computed on x's device). Without a seed a fresh one
                 is drawn per call. A ``portnn.random.DeviceKey`` (a seed
                 held on the device) works too: a compiled step's traced seed.
        Any other key is a ValueError.
    Returns out : like x, cache : DropoutCache (mask None in test mode)
    """
    xp = namespace(x)
    check_float_array(xp, x, "x")
    check_dict(dropout_param, "dropout_param", "a dict with 'p' and 'mode'")
    check_keys(dropout_param, "dropout_param", DROPOUT_PARAM_KEYS)
    p = check_float_in(dropout_param.get("p"), "p (keep probability)", 0.0, 1.0, lo_open=True)
    mode = dropout_param.get("mode")
    if mode not in ("train", "test"):
        raise ValueError(f"dropout_param['mode']: expected 'train' or 'test', got {mode!r}")
    seed = dropout_param.get("seed")
    shape = tuple(x.shape)
    if mode == "test" or p == 1.0:
        return x, DropoutCache(dropout_param, None, shape, x.dtype, array_origin(xp, x))
    if seed is None:
        seed = prandom.new_seed()
    keep = prandom.keep_mask(seed, shape, p, xp, aac.device(x))
    mask = xp.astype(keep, x.dtype) * (1.0 / p)
    return x * mask, DropoutCache(dropout_param, mask, shape, x.dtype, None)


def dropout_backward(dout, cache):
    """dx = dout * mask (mask already holds the 1/p scale).

    dout: the forward output's shape and dtype (else a ValueError / TypeError);
    cache: DropoutCache from dropout_forward. Returns dx, dout's shape and dtype.
    """
    check_cache(cache, "dropout_backward", DropoutCache, "dropout_forward")
    mask = cache.mask
    if mask is None:
        check_dout(dout, "dropout_backward", cache.shape, cache.dtype, origin=cache.origin)
        return dout
    check_dout(dout, "dropout_backward", cache.shape, cache.dtype, mask)
    return dout * mask
