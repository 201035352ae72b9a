"""Inverted dropout with masks that are identical on every backend for a given seed."""

from __future__ import annotations

import array_api_compat as aac

from .. import random as prandom
from .._checks import check_float_array, check_float_in
from ..backends import namespace


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
                 is drawn per call.
    Returns out : like x, cache : (dropout_param, mask) with mask None in test mode
    """
    xp = namespace(x)
    check_float_array(xp, x, "x")
    p = check_float_in(dropout_param.get("p"), "p (keep probability)", 0.0, 1.0, lo_open=True)
    mode = dropout_param.get("mode")
    if mode not in ("train", "test"):
        raise ValueError(f"dropout_param['mode']: expected 'train' or 'test', got {mode!r}")
    seed = dropout_param.get("seed")
    if mode == "test" or p == 1.0:
        return x, (dropout_param, None)
    if seed is None:
        seed = prandom.new_seed()
    keep = prandom.keep_mask(seed, tuple(x.shape), p, xp, aac.device(x))
    mask = xp.astype(keep, x.dtype) * (1.0 / p)
    return x * mask, (dropout_param, mask)


def dropout_backward(dout, cache):
    """dx = dout * mask (mask already holds the 1/p scale). Shapes as dout."""
    _, mask = cache
    return dout if mask is None else dout * mask
