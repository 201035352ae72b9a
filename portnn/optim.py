"""First-order update rules, written once against the Python Array API standard.

Every rule has the signature::

    next_w, config = rule(w, dw, config=None)

    w      : float array, any shape S, on any backend/device (float32 or float64)
    dw     : float array of shape S, same backend, device and dtype as w
    config : dict of hyper-parameters and state, or None for the defaults.
             Missing keys are filled in with the defaults below; state arrays
             (velocity / cache / m / v) are created lazily as zeros of w's shape,
             dtype and device, and replaced by new arrays after each step.
    next_w : a NEW array of shape S, dtype and device of w (w is never mutated)

The returned ``config`` is the same dict object that was passed in (a new one if
None was passed), updated with the defaults and the new state; feed it back on
the next step for this parameter. A key the rule does not know (a typo such as
'lr' for 'learning_rate', or another rule's hyper-parameter such as 'beta1' for
sgd) is a ValueError naming it and the accepted ones (``CONFIG_KEYS``): ignored,
it would silently train with the default.

Hyper-parameters are Python floats (``float(config[key])``), so a float32
parameter stays float32 on every backend. Two may also be 0-d arrays, as a
compiled training step passes them (``Solver(compile=True)``: traced values,
whose dtype and shape only are checked, never their value): learning_rate, of
w's dtype, and Adam's t, of an integer dtype. All arguments are validated before the
config is touched: a call that raises leaves ``config`` exactly as it was.

Defaults (as in the classic CS231n assignment):

=============  =======================================================  ==========================
rule           hyper-parameters                                          state
=============  =======================================================  ==========================
sgd            learning_rate=1e-2                                        -
sgd_momentum   learning_rate=1e-2, momentum=0.9                          velocity
rmsprop        learning_rate=1e-2, decay_rate=0.99, epsilon=1e-8         cache
adam           learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8  m, v, t (int step count)
=============  =======================================================  ==========================
"""

from __future__ import annotations

import math
import numbers

import array_api_compat as aac

from ._checks import (
    check_array_beside,
    check_float_array,
    check_float_in,
    check_int,
    check_keys,
    check_same_dtype,
    check_shape,
    dtype_str,
)
from .backends import namespace

__all__ = ["sgd", "sgd_momentum", "rmsprop", "adam", "UPDATE_RULES", "CONFIG_KEYS", "get_update_rule",
           "check_config_keys"]

#: The keys each rule's config may hold: its hyper-parameters and the state it
#: writes back itself (module docstring). Any other key is a ValueError.
CONFIG_KEYS = {
    "sgd": ("learning_rate",),
    "sgd_momentum": ("learning_rate", "momentum", "velocity"),
    "rmsprop": ("learning_rate", "decay_rate", "epsilon", "cache"),
    "adam": ("learning_rate", "beta1", "beta2", "epsilon", "m", "v", "t"),
}


# -- validation (runs before anything is written to config) -------------------------------


def _check_params(w, dw):
    """w, dw: float arrays of one backend/device, same shape and dtype. Returns xp."""
    for name, a in (("w", w), ("dw", dw)):
        if not (hasattr(a, "shape") and hasattr(a, "dtype")) or isinstance(a, (int, float, bool)):
            raise TypeError(f"{name}: expected an array, got {type(a).__module__}.{type(a).__name__}")
    try:
        xp = namespace(w, dw)  # TypeError for two libraries, ValueError for two devices
    except (TypeError, ValueError) as e:
        raise type(e)(f"dw: expected an array of w's backend and device; {e}") from None
    check_float_array(xp, w, "w")
    check_same_dtype("w", w, "dw", dw)
    check_shape(dw, "dw", tuple(w.shape))
    return xp


def _check_config(config, rule):
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise TypeError(f"config: expected a dict or None, got {type(config).__name__}")
    check_keys(config, "config", CONFIG_KEYS[rule])
    return config


def _real(config, key, default, lo=-math.inf, hi=math.inf, lo_open=False, hi_open=False, expected=None):
    return check_float_in(config.get(key, default), f"config[{key!r}]", lo, hi, lo_open, hi_open, expected)


def _is_0d_array(v):
    """An array value (not a Python or NumPy number: those keep the float path)."""
    return hasattr(v, "shape") and hasattr(v, "dtype") and not isinstance(v, numbers.Number)


def _learning_rate(config, default, w):
    """A finite float >= 0, or a 0-d array of w's dtype (a compiled step's traced
    rate: only its dtype and shape are checked, its value is never read)."""
    v = config.get("learning_rate", default)
    if not _is_0d_array(v):
        return _real(config, "learning_rate", default, lo=0.0, expected="a finite number >= 0")
    check_array_beside(w, v, "config['learning_rate']", "a finite number >= 0 or a 0-d array")
    if v.dtype != w.dtype:
        raise TypeError(f"config['learning_rate']: expected a number or a 0-d array of dtype "
                        f"{dtype_str(w.dtype)} (the dtype of w), got dtype {dtype_str(v.dtype)}")
    check_shape(v, "config['learning_rate']", ())
    return v


def _unit_interval(config, key, default):
    """A decay-like coefficient in [0, 1)."""
    return _real(config, key, default, lo=0.0, hi=1.0, hi_open=True, expected="a value in [0, 1)")


def _epsilon(config, default):
    return _real(config, "epsilon", default, lo=0.0, lo_open=True, expected="a finite number > 0")


def _step_count(xp, config, w):
    """A non-negative int, or a 0-d integer array (a compiled step's traced count:
    dtype and shape checked, value never read)."""
    t = config.get("t", 0)
    if not _is_0d_array(t):
        return check_int(t, "config['t']", minimum=0, expected="a non-negative integer step count")
    check_array_beside(w, t, "config['t']", "a non-negative integer step count or a 0-d integer array")
    if not xp.isdtype(t.dtype, "integral"):
        raise TypeError(f"config['t']: expected an integer step count or a 0-d integer array, "
                        f"got dtype {dtype_str(t.dtype)}")
    check_shape(t, "config['t']", ())
    return t


def _state(xp, config, key, w):
    """The existing state array config[key] (checked against w), or fresh zeros like w."""
    s = config.get(key)
    if s is None:
        return xp.zeros(tuple(w.shape), dtype=w.dtype, device=aac.device(w))
    check_array_beside(w, s, f"config[{key!r}]", "an array of w's shape or None")
    if s.dtype != w.dtype:
        raise TypeError(
            f"config[{key!r}]: expected dtype {dtype_str(w.dtype)} (the dtype of w), got {dtype_str(s.dtype)}"
        )
    check_shape(s, f"config[{key!r}]", tuple(w.shape))
    return s


def _keep_0d(xp, w, *arrays):
    """NumPy turns 0-d array arithmetic into NumPy scalars; keep 0-d results arrays."""
    if w.ndim != 0:
        return arrays
    return tuple(xp.asarray(a, device=aac.device(w)) for a in arrays)


# -- update rules ------------------------------------------------------------------------


def sgd(w, dw, config=None):
    """Vanilla stochastic gradient descent: ``next_w = w - learning_rate * dw``.

    w, dw : float arrays of shape S (same backend, device, dtype)
    config: learning_rate (float >= 0, default 1e-2)
    Returns (next_w of shape S, config).
    """
    config = _check_config(config, "sgd")
    xp = _check_params(w, dw)
    lr = _learning_rate(config, 1e-2, w)

    (next_w,) = _keep_0d(xp, w, w - lr * dw)
    config.setdefault("learning_rate", lr)
    return next_w, config


def sgd_momentum(w, dw, config=None):
    """SGD with momentum.

    ``v = momentum * v - learning_rate * dw;  next_w = w + v``

    w, dw : float arrays of shape S (same backend, device, dtype)
    config: learning_rate (default 1e-2), momentum in [0, 1) (default 0.9),
            velocity (array of shape S, created as zeros)
    Returns (next_w of shape S, config) with config["velocity"] the new v.
    """
    config = _check_config(config, "sgd_momentum")
    xp = _check_params(w, dw)
    lr = _learning_rate(config, 1e-2, w)
    mu = _unit_interval(config, "momentum", 0.9)
    v = _state(xp, config, "velocity", w)

    v = mu * v - lr * dw
    next_w, v = _keep_0d(xp, w, w + v, v)
    config.setdefault("learning_rate", lr)
    config.setdefault("momentum", mu)
    config["velocity"] = v
    return next_w, config


def rmsprop(w, dw, config=None):
    """RMSProp: a moving average of squared gradients scales each step.

    ``cache = decay_rate * cache + (1 - decay_rate) * dw**2``
    ``next_w = w - learning_rate * dw / (sqrt(cache) + epsilon)``

    w, dw : float arrays of shape S (same backend, device, dtype)
    config: learning_rate (default 1e-2), decay_rate in [0, 1) (default 0.99),
            epsilon > 0 (default 1e-8), cache (array of shape S, created as zeros)
    Returns (next_w of shape S, config) with config["cache"] the new cache.
    """
    config = _check_config(config, "rmsprop")
    xp = _check_params(w, dw)
    lr = _learning_rate(config, 1e-2, w)
    rho = _unit_interval(config, "decay_rate", 0.99)
    eps = _epsilon(config, 1e-8)
    cache = _state(xp, config, "cache", w)

    cache = rho * cache + (1.0 - rho) * (dw * dw)
    next_w = w - lr * dw / (xp.sqrt(cache) + eps)
    next_w, cache = _keep_0d(xp, w, next_w, cache)
    config.setdefault("learning_rate", lr)
    config.setdefault("decay_rate", rho)
    config.setdefault("epsilon", eps)
    config["cache"] = cache
    return next_w, config


def adam(w, dw, config=None):
    """Adam with bias correction (t is incremented before it is used).

    ``t += 1``
    ``m = beta1 * m + (1 - beta1) * dw;  v = beta2 * v + (1 - beta2) * dw**2``
    ``next_w = w - learning_rate * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + epsilon)``

    w, dw : float arrays of shape S (same backend, device, dtype)
    config: learning_rate (default 1e-3), beta1 and beta2 in [0, 1) (defaults 0.9,
            0.999), epsilon > 0 (default 1e-8), m and v (arrays of shape S,
            created as zeros), t (int, number of steps taken, default 0)
    Returns (next_w of shape S, config) with config["m"], ["v"], ["t"] updated.
    """
    config = _check_config(config, "adam")
    xp = _check_params(w, dw)
    lr = _learning_rate(config, 1e-3, w)
    beta1 = _unit_interval(config, "beta1", 0.9)
    beta2 = _unit_interval(config, "beta2", 0.999)
    eps = _epsilon(config, 1e-8)
    t = _step_count(xp, config, w) + 1
    m = _state(xp, config, "m", w)
    v = _state(xp, config, "v", w)

    m = beta1 * m + (1.0 - beta1) * dw
    v = beta2 * v + (1.0 - beta2) * (dw * dw)
    c1, c2 = _bias_corrections(xp, beta1, beta2, t, w.dtype)
    m_hat = m / c1
    v_hat = v / c2
    next_w = w - lr * m_hat / (xp.sqrt(v_hat) + eps)
    next_w, m, v = _keep_0d(xp, w, next_w, m, v)
    config.setdefault("learning_rate", lr)
    config.setdefault("beta1", beta1)
    config.setdefault("beta2", beta2)
    config.setdefault("epsilon", eps)
    config["m"] = m
    config["v"] = v
    config["t"] = t
    return next_w, config


def _bias_corrections(xp, beta1, beta2, t, dtype):
    """(1 - beta1**t, 1 - beta2**t) that keep float32 maths float32: Python floats
    for an int t (as always); for an array t, computed in float64 like the Python
    floats (1 - 0.999**t in float32 would lose 4 digits) and then cast to ``dtype``."""
    if isinstance(t, int):
        return 1.0 - beta1**t, 1.0 - beta2**t
    tf = xp.astype(t, xp.float64)
    return xp.astype(1.0 - beta1**tf, dtype), xp.astype(1.0 - beta2**tf, dtype)


UPDATE_RULES = {"sgd": sgd, "sgd_momentum": sgd_momentum, "rmsprop": rmsprop, "adam": adam}


def get_update_rule(name):
    """The update rule called ``name`` (a key of UPDATE_RULES).

    A callable is returned unchanged, so a custom rule with the same
    ``(w, dw, config) -> (next_w, config)`` signature can be passed wherever a
    name is accepted. An unknown name raises ValueError listing the known ones.
    """
    if callable(name):
        return name
    if not isinstance(name, str):
        raise TypeError(
            f"update_rule: expected a rule name (str) or a callable, got {type(name).__name__}"
        )
    try:
        return UPDATE_RULES[name]
    except KeyError:
        raise ValueError(
            f"update_rule: unknown update rule {name!r}; known rules: {sorted(UPDATE_RULES)}"
        ) from None


def check_config_keys(update_rule, config, name="optim_config"):
    """Refuse, before any step, the keys of ``config`` (a dict or None) that the
    update rule (a name of UPDATE_RULES or one of its rules) does not accept; the
    message starts with ``name``. A custom callable is not checked (it may take
    anything). The rules check their own config on every call as well."""
    rule = get_update_rule(update_rule)
    for key, fn in UPDATE_RULES.items():
        if fn is rule:
            check_keys(config or {}, name, CONFIG_KEYS[key])
            return
