"""Update rules: NumPy references over several steps, state placement, dtype, errors."""

import numpy as np
import pytest

from portnn import optim
from portnn.backends import get_backend
from tests.helpers import assert_on_backend, put, to_np

RULES = ["sgd", "sgd_momentum", "rmsprop", "adam"]
STATE_KEYS = {"sgd": (), "sgd_momentum": ("velocity",), "rmsprop": ("cache",), "adam": ("m", "v")}
DEFAULTS = {
    "sgd": {"learning_rate": 1e-2},
    "sgd_momentum": {"learning_rate": 1e-2, "momentum": 0.9},
    "rmsprop": {"learning_rate": 1e-2, "decay_rate": 0.99, "epsilon": 1e-8},
    "adam": {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8},
}


# -- NumPy references, written out from the update formulas ----------------------------


def ref_step(rule, w, dw, cfg):
    """One step in float64 NumPy; cfg (a plain dict of floats / np arrays) is updated."""
    if rule == "sgd":
        return w - cfg["learning_rate"] * dw
    if rule == "sgd_momentum":
        v = cfg.get("velocity", np.zeros_like(w))
        v = cfg["momentum"] * v - cfg["learning_rate"] * dw
        cfg["velocity"] = v
        return w + v
    if rule == "rmsprop":
        c = cfg.get("cache", np.zeros_like(w))
        c = cfg["decay_rate"] * c + (1 - cfg["decay_rate"]) * dw**2
        cfg["cache"] = c
        return w - cfg["learning_rate"] * dw / (np.sqrt(c) + cfg["epsilon"])
    if rule == "adam":
        t = cfg.get("t", 0) + 1
        m = cfg["beta1"] * cfg.get("m", np.zeros_like(w)) + (1 - cfg["beta1"]) * dw
        v = cfg["beta2"] * cfg.get("v", np.zeros_like(w)) + (1 - cfg["beta2"]) * dw**2
        mt = m / (1 - cfg["beta1"] ** t)
        vt = v / (1 - cfg["beta2"] ** t)
        cfg.update(m=m, v=v, t=t)
        return w - cfg["learning_rate"] * mt / (np.sqrt(vt) + cfg["epsilon"])
    raise AssertionError(rule)


def _data(rng, shape=(4, 5), steps=3):
    w = rng.standard_normal(shape)
    dws = [rng.standard_normal(shape) for _ in range(steps)]
    return w, dws


def _check_state(rule, config, ref_cfg, backend, dtype, tol):
    for key in STATE_KEYS[rule]:
        s = config[key]
        assert_on_backend(s, backend)
        assert s.dtype == backend.dtype(dtype), (key, s.dtype)
        np.testing.assert_allclose(to_np(s), ref_cfg[key], **tol)
    if rule == "adam":
        assert config["t"] == ref_cfg["t"] and isinstance(config["t"], int)


# -- correctness ---------------------------------------------------------------------------


@pytest.mark.parametrize("rule", RULES)
def test_three_steps_match_numpy_reference_with_defaults(backend, rule, rng):
    w0, dws = _data(rng)
    ref_cfg = dict(DEFAULTS[rule])
    rw = w0.copy()
    w = put(backend, w0)
    config = None
    for dw0 in dws:
        rw = ref_step(rule, rw, dw0, ref_cfg)
        w, config = getattr(optim, rule)(w, put(backend, dw0), config)
        assert_on_backend(w, backend)
        assert w.dtype == backend.xp.float64
        np.testing.assert_allclose(to_np(w), rw, rtol=1e-12, atol=1e-14)
        _check_state(rule, config, ref_cfg, backend, "float64", dict(rtol=1e-12, atol=1e-14))
    for key, value in DEFAULTS[rule].items():
        assert config[key] == value


CUSTOM = {
    "sgd": {"learning_rate": 0.3},
    "sgd_momentum": {"learning_rate": 0.05, "momentum": 0.5},
    "rmsprop": {"learning_rate": 0.02, "decay_rate": 0.9, "epsilon": 1e-4},
    "adam": {"learning_rate": 0.01, "beta1": 0.8, "beta2": 0.95, "epsilon": 1e-6},
}


@pytest.mark.parametrize("rule", RULES)
def test_three_steps_custom_hyperparameters_and_existing_state(backend, rule, rng):
    w0, dws = _data(rng, shape=(7,))
    ref_cfg = dict(CUSTOM[rule])
    # Start from a state left by earlier steps (not zeros), as the Solver does.
    for key in STATE_KEYS[rule]:
        ref_cfg[key] = np.abs(rng.standard_normal(w0.shape))
    if rule == "adam":
        ref_cfg["t"] = 5
    config = {k: (put(backend, v) if isinstance(v, np.ndarray) else v) for k, v in ref_cfg.items()}
    rw, w = w0.copy(), put(backend, w0)
    for dw0 in dws:
        rw = ref_step(rule, rw, dw0, ref_cfg)
        w, config2 = getattr(optim, rule)(w, put(backend, dw0), config)
        assert config2 is config  # the caller's dict is updated and returned
        np.testing.assert_allclose(to_np(w), rw, rtol=1e-12, atol=1e-14)
        _check_state(rule, config, ref_cfg, backend, "float64", dict(rtol=1e-12, atol=1e-14))
    for key, value in CUSTOM[rule].items():
        assert config[key] == value


def test_adam_first_step_is_bias_corrected(backend):
    # After one step m_hat = dw and v_hat = dw**2, so the step is ~ lr * sign(dw).
    dw = put(backend, np.array([2.0, -3.0, 0.5]))
    w = put(backend, np.zeros(3))
    next_w, config = optim.adam(w, dw)
    np.testing.assert_allclose(to_np(next_w), [-1e-3, 1e-3, -1e-3], rtol=1e-6)
    assert config["t"] == 1


def test_sgd_momentum_velocity_accumulates(backend):
    w = put(backend, np.zeros(2))
    dw = put(backend, np.ones(2))
    config = {"learning_rate": 1.0, "momentum": 0.5}
    for _ in range(3):
        w, config = optim.sgd_momentum(w, dw, config)
    # v: -1, -1.5, -1.75; w: -1, -2.5, -4.25
    np.testing.assert_allclose(to_np(w), [-4.25, -4.25], rtol=1e-15)
    np.testing.assert_allclose(to_np(config["velocity"]), [-1.75, -1.75], rtol=1e-15)


@pytest.mark.parametrize("rule", RULES)
def test_defaults_filled_into_new_config(backend, rule, rng):
    w0, (dw0,) = _data(rng, steps=1)
    _, config = getattr(optim, rule)(put(backend, w0), put(backend, dw0))
    for key, value in DEFAULTS[rule].items():
        assert config[key] == value and isinstance(config[key], float), key
    assert set(STATE_KEYS[rule]) <= set(config)
    if rule == "adam":
        assert config["t"] == 1


@pytest.mark.parametrize("rule", RULES)
def test_w_is_not_mutated_and_a_new_array_is_returned(backend, rule, rng):
    w0, dws = _data(rng)
    w = put(backend, w0)
    config = None
    for dw0 in dws:
        before = to_np(w).copy()
        dw = put(backend, dw0)
        dw_before = to_np(dw).copy()
        next_w, config = getattr(optim, rule)(w, dw, config)
        assert next_w is not w
        np.testing.assert_array_equal(to_np(w), before)
        np.testing.assert_array_equal(to_np(dw), dw_before)
        w = next_w


@pytest.mark.parametrize("rule", RULES)
def test_float32_stays_float32(backend, rule, rng):
    w0, dws = _data(rng)
    ref_cfg = dict(DEFAULTS[rule])
    rw = w0.astype(np.float32).astype(np.float64)
    w = put(backend, w0, dtype="float32")
    config = None
    for dw0 in dws:
        dw32 = dw0.astype(np.float32)
        rw = ref_step(rule, rw, dw32.astype(np.float64), ref_cfg)
        w, config = getattr(optim, rule)(w, put(backend, dw32, dtype="float32"), config)
        assert w.dtype == backend.xp.float32
        assert_on_backend(w, backend)
        np.testing.assert_allclose(to_np(w), rw, rtol=1e-5, atol=1e-6)
        _check_state(rule, config, ref_cfg, backend, "float32", dict(rtol=1e-4, atol=1e-6))


def test_learning_rate_zero_keeps_w(backend, rng):
    w0, (dw0,) = _data(rng, steps=1)
    for rule in RULES:
        next_w, _ = getattr(optim, rule)(put(backend, w0), put(backend, dw0), {"learning_rate": 0.0})
        np.testing.assert_array_equal(to_np(next_w), w0)


def _scalar_array(backend, value):
    xp = backend.xp
    return xp.asarray(value, dtype=xp.float64, device=backend.device)


def test_zero_dim_parameter(backend):
    # NumPy turns 0-d arithmetic into scalars; results must stay backend arrays.
    for rule in RULES:
        w, config, rw, ref_cfg = _scalar_array(backend, 1.0), None, np.array(1.0), dict(DEFAULTS[rule])
        assert tuple(w.shape) == ()
        for _ in range(2):
            rw = ref_step(rule, rw, np.array(0.5), ref_cfg)
            w, config = getattr(optim, rule)(w, _scalar_array(backend, 0.5), config)
            assert tuple(w.shape) == ()
            assert_on_backend(w, backend)
            np.testing.assert_allclose(to_np(w), rw, rtol=1e-12)
            _check_state(rule, config, ref_cfg, backend, "float64", dict(rtol=1e-12))


# -- errors leave config untouched ------------------------------------------------------


def _other_backend_array(backend, a):
    """The same data on another library or device than ``backend``."""
    spec = "array_api_strict:device1"
    if backend.name == "array_api_strict" and str(backend.device) == str(get_backend(spec).device):
        spec = "numpy"
    return get_backend(spec).asarray(a, dtype="float64")


BAD_CONFIG = [
    ("sgd", "learning_rate", -0.1, ValueError),
    ("sgd", "learning_rate", float("nan"), ValueError),
    ("sgd", "learning_rate", float("inf"), ValueError),
    ("sgd", "learning_rate", "fast", TypeError),
    ("sgd", "learning_rate", None, TypeError),
    ("sgd_momentum", "learning_rate", -1.0, ValueError),
    ("sgd_momentum", "momentum", 1.0, ValueError),
    ("sgd_momentum", "momentum", -0.1, ValueError),
    ("sgd_momentum", "momentum", True, TypeError),
    ("rmsprop", "decay_rate", 1.0, ValueError),
    ("rmsprop", "decay_rate", float("nan"), ValueError),
    ("rmsprop", "epsilon", 0.0, ValueError),
    ("rmsprop", "epsilon", -1e-8, ValueError),
    ("adam", "learning_rate", float("-inf"), ValueError),
    ("adam", "beta1", 1.0, ValueError),
    ("adam", "beta1", -0.5, ValueError),
    ("adam", "beta2", 1.5, ValueError),
    ("adam", "epsilon", 0.0, ValueError),
    ("adam", "t", -1, ValueError),
    ("adam", "t", 1.5, TypeError),
]


def _snapshot(config):
    """Keys, scalar values (repr, so NaN compares equal) and the identity of arrays."""
    return {
        k: (repr(v) if isinstance(v, (int, float, str, type(None))) else ("id", id(v)))
        for k, v in config.items()
    }


def _started_config(backend, rule, rng, shape=(4, 5)):
    """A config that already holds state from one step."""
    w0, (dw0,) = _data(rng, shape=shape, steps=1)
    _, config = getattr(optim, rule)(put(backend, w0), put(backend, dw0))
    return config


@pytest.mark.parametrize("rule,key,value,exc", BAD_CONFIG, ids=lambda p: str(p))
def test_bad_hyperparameter_raises_naming_key_and_leaves_config(backend, rule, key, value, exc, rng):
    config = _started_config(backend, rule, rng)
    config[key] = value
    before = _snapshot(config)
    w0, (dw0,) = _data(rng, steps=1)
    with pytest.raises(exc, match=key):
        getattr(optim, rule)(put(backend, w0), put(backend, dw0), config)
    assert _snapshot(config) == before


@pytest.mark.parametrize("rule", RULES)
def test_bad_arrays_raise_and_leave_config(backend, rule, rng):
    config = _started_config(backend, rule, rng)
    before = _snapshot(config)
    w0, (dw0,) = _data(rng, steps=1)
    w = put(backend, w0)
    cases = [
        (put(backend, dw0[:, :3]), ValueError, "dw"),  # shape
        (put(backend, dw0, dtype="float32"), TypeError, "dw"),  # dtype
        (_other_backend_array(backend, dw0), (TypeError, ValueError), "dw: .*different"),  # backend/device
    ]
    for dw, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            getattr(optim, rule)(w, dw, config)
        assert _snapshot(config) == before
    with pytest.raises(TypeError, match="w"):
        getattr(optim, rule)(w0.tolist(), put(backend, dw0), config)
    with pytest.raises(TypeError, match="w: expected a float32 or float64"):
        getattr(optim, rule)(put(backend, np.arange(20).reshape(4, 5)), put(backend, np.arange(20).reshape(4, 5)), config)
    with pytest.raises(TypeError, match="config"):
        getattr(optim, rule)(w, put(backend, dw0), [("learning_rate", 0.1)])
    assert _snapshot(config) == before


@pytest.mark.parametrize("rule", ["sgd_momentum", "rmsprop", "adam"])
def test_state_of_another_parameter_is_rejected(backend, rule, rng):
    # Reusing one config for two parameters of different shapes is a common bug.
    config = _started_config(backend, rule, rng, shape=(3,))
    before = _snapshot(config)
    w0, (dw0,) = _data(rng, steps=1)
    key = STATE_KEYS[rule][0]
    with pytest.raises(ValueError, match=key):
        getattr(optim, rule)(put(backend, w0), put(backend, dw0), config)
    assert _snapshot(config) == before
    # ... and state of the wrong dtype
    config32 = _started_config(backend, rule, rng)
    before = _snapshot(config32)
    with pytest.raises(TypeError, match=key):
        getattr(optim, rule)(put(backend, w0, dtype="float32"), put(backend, dw0, dtype="float32"), config32)
    assert _snapshot(config32) == before
    # ... and state on another backend/device
    config[key] = _other_backend_array(backend, np.zeros(w0.shape))
    before = _snapshot(config)
    with pytest.raises((TypeError, ValueError), match=key):
        getattr(optim, rule)(put(backend, w0), put(backend, dw0), config)
    assert _snapshot(config) == before


# -- registry ------------------------------------------------------------------------------


def test_update_rules_registry():
    assert optim.UPDATE_RULES == {
        "sgd": optim.sgd,
        "sgd_momentum": optim.sgd_momentum,
        "rmsprop": optim.rmsprop,
        "adam": optim.adam,
    }
    for name, fn in optim.UPDATE_RULES.items():
        assert optim.get_update_rule(name) is fn


def test_unknown_update_rule_lists_known_names():
    with pytest.raises(ValueError) as info:
        optim.get_update_rule("adagrad")
    msg = str(info.value)
    assert "adagrad" in msg
    for name in RULES:
        assert name in msg


def test_get_update_rule_accepts_callable_rejects_other_types():
    def custom(w, dw, config=None):
        return w, config

    assert optim.get_update_rule(custom) is custom
    with pytest.raises(TypeError, match="update_rule"):
        optim.get_update_rule(3)


def test_optim_does_not_import_array_libraries():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(optim))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    assert not names & {"numpy", "torch", "cupy"}, names
