"""Regression tests for what an adversarial run found doing something silently wrong
or failing late (the "No silent failures" issue). Each test names its point."""

import re

import numpy as np
import pytest

import portnn
from portnn import layer_utils as lu
from portnn import layers as L
from portnn import optim
from tests.helpers import to_np

# -- point 6: non-finite data ------------------------------------------------------------


def test_predict_refuses_nonfinite_host_rows(backend):
    model = portnn.FullyConnectedNet([8], input_dim=4, seed=0, backend=backend)
    X = np.ones((5, 4), dtype=np.float32)
    X[1, 0], X[3, 2] = np.nan, np.inf
    with pytest.raises(ValueError, match=r"X: 2 of 5 rows hold NaN or inf \(rows 1, 3\)"):
        model.predict(X)


def test_predict_refuses_nonfinite_device_rows(backend):
    model = portnn.FullyConnectedNet([8], input_dim=4, seed=0, backend=backend)
    X = np.ones((5, 4), dtype=np.float32)
    X[4, 1] = np.nan
    Xd = backend.asarray(X, dtype="float32")
    if isinstance(Xd, np.ndarray):  # numpy: device data is host data
        match = r"X: 1 of 5 rows hold NaN or inf \(rows 4\)"
    else:
        match = r"X: 1 of 5 rows give non-finite scores .*rows 4\)"
    with pytest.raises(ValueError, match=match):
        model.predict(Xd, batch_size=2)
    labels = model.predict(backend.asarray(X[:4], dtype="float32"), batch_size=3)
    assert labels.dtype == np.int64 and labels.shape == (4,)
    assert np.array_equal(labels, model.predict(X[:4]))
    assert to_np(Xd).shape == (5, 4)


# -- point 3: batchnorm in test mode without running statistics ---------------------------


def _arr(backend, *shape, seed=0, dtype="float64"):
    return backend.asarray(np.random.default_rng(seed).standard_normal(shape), dtype=dtype)


_NO_STATS = (r"bn_param: expected 'running_mean' and 'running_var' in test mode, got neither: the running "
             r"statistics are missing \(run in train mode first, or pass running_mean/running_var\)")


@pytest.mark.parametrize("layer", ["batchnorm", "spatial_batchnorm"])
def test_batchnorm_test_mode_needs_running_statistics(backend, layer):
    """Zeros would standardise by sqrt(eps): 0.1257 came out as 39.76. Now an error, and
    the statistics are still created by the first train-mode call and then used."""
    fwd = getattr(L, f"{layer}_forward")
    shape = (4, 3) if layer == "batchnorm" else (4, 3, 2, 2)
    x, g, b = _arr(backend, *shape), _arr(backend, 3, seed=1), _arr(backend, 3, seed=2)
    p = {"mode": "test"}
    with pytest.raises(ValueError, match=_NO_STATS):
        fwd(x, g, b, p)
    assert p == {"mode": "test"}  # nothing written
    p["mode"] = "train"
    fwd(x, g, b, p)
    assert tuple(p["running_mean"].shape) == (3,) and tuple(p["running_var"].shape) == (3,)
    p["mode"] = "test"
    out, _ = fwd(x, g, b, p)
    axes = (0,) if layer == "batchnorm" else (0, 2, 3)
    bshape = (1, 3) if layer == "batchnorm" else (1, 3, 1, 1)
    xh = to_np(x)
    rm = 0.1 * xh.mean(axis=axes)  # momentum 0.9 from zeros, one step
    rv = 0.1 * xh.var(axis=axes)
    ref = (xh - rm.reshape(bshape)) / np.sqrt(rv.reshape(bshape) + 1e-5) * to_np(g).reshape(bshape) \
        + to_np(b).reshape(bshape)
    np.testing.assert_allclose(to_np(out), ref, rtol=1e-12, atol=1e-12)


_UNTRAINED = (r"FullyConnectedNet: batchnorm layer 1 has no running statistics yet: train the model "
              r"\(Solver.train or loss\(X, y\)\) before predicting")


def test_untrained_batchnorm_model_says_so(backend):
    model = portnn.FullyConnectedNet([6, 5], input_dim=4, num_classes=3, normalization="batchnorm", seed=0,
                                     dtype="float64", backend=backend)
    X = _arr(backend, 8, 4)
    y = backend.asarray(np.array([0, 1, 2, 0, 1, 2, 0, 1], dtype=np.int64))
    assert model.running_stats_missing() == [1, 2]
    with pytest.raises(ValueError, match=_UNTRAINED):
        model.loss(X)
    with pytest.raises(ValueError, match=_UNTRAINED):
        model.predict(to_np(X))
    assert model.buffers() == {}  # the refused calls stored nothing
    model.loss(X, y)  # one training-mode pass creates the statistics
    assert model.running_stats_missing() == []
    labels = model.predict(to_np(X))
    # A fresh model given the trained state (buffers included) predicts the same.
    twin = portnn.FullyConnectedNet([6, 5], input_dim=4, num_classes=3, normalization="batchnorm", seed=1,
                                    dtype="float64", backend=backend)
    twin.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(twin.predict(to_np(X)), labels)


@pytest.mark.parametrize("normalization", [None, "layernorm"])
def test_models_without_running_statistics_score_untrained(backend, normalization):
    """No false alarm: only batchnorm needs statistics (ThreeLayerConvNet has no batchnorm)."""
    model = portnn.FullyConnectedNet([5], input_dim=4, num_classes=3, normalization=normalization, seed=0,
                                     dtype="float64", backend=backend)
    assert model.running_stats_missing() == []
    assert tuple(model.loss(_arr(backend, 2, 4)).shape) == (2, 3)
    cnn = portnn.ThreeLayerConvNet(input_dim=(1, 6, 6), num_filters=2, filter_size=3, hidden_dim=4,
                                   num_classes=3, seed=0, dtype="float64", backend=backend)
    assert tuple(cnn.loss(_arr(backend, 2, 1, 6, 6)).shape) == (2, 3)


# -- point 4: backward functions refuse a dout that only broadcasts ----------------------

_CONV = {"stride": 1, "pad": 1}
_POOL = {"pool_height": 2, "pool_width": 2, "stride": 2}


def _cases():
    """name -> (forward(be) -> (out, cache), backward, prefix of the dout messages, backward's name)."""
    a = _arr

    def affine_norm(fwd, param):
        return lambda be: fwd(a(be, 4, 5), a(be, 5, 3, seed=1), a(be, 3, seed=2), a(be, 3, seed=3),
                              a(be, 3, seed=4), dict(param))

    def conv_args(be):
        return a(be, 2, 3, 4, 4), a(be, 2, 3, 3, 3, seed=1), a(be, 2, seed=2)

    def conv_norm(be):
        return (*conv_args(be), a(be, 2, seed=3), a(be, 2, seed=4))

    return {
        "affine": (lambda be: L.affine_forward(a(be, 4, 5), a(be, 5, 3, seed=1), a(be, 3, seed=2)),
                   L.affine_backward, "affine_backward: ", "affine_backward"),
        "relu": (lambda be: L.relu_forward(a(be, 4, 5)), L.relu_backward, "relu_backward: ", "relu_backward"),
        "batchnorm": (lambda be: L.batchnorm_forward(a(be, 4, 3), a(be, 3), a(be, 3), {"mode": "train"}),
                      L.batchnorm_backward, "batchnorm_backward: ", "batchnorm_backward"),
        "batchnorm_alt": (lambda be: L.batchnorm_forward(a(be, 4, 3), a(be, 3), a(be, 3), {"mode": "train"}),
                          L.batchnorm_backward_alt, "batchnorm_backward_alt: ", "batchnorm_backward_alt"),
        "batchnorm_test_mode": (
            lambda be: L.batchnorm_forward(a(be, 4, 3), a(be, 3), a(be, 3),
                                           {"mode": "test", "running_mean": a(be, 3), "running_var": a(be, 3) ** 2}),
            L.batchnorm_backward, "batchnorm_backward: ", "batchnorm_backward"),
        "spatial_batchnorm": (
            lambda be: L.spatial_batchnorm_forward(a(be, 2, 3, 2, 2), a(be, 3), a(be, 3), {"mode": "train"}),
            L.spatial_batchnorm_backward, "spatial_batchnorm_backward: ", "spatial_batchnorm_backward"),
        "layernorm": (lambda be: L.layernorm_forward(a(be, 4, 3), a(be, 3), a(be, 3), {}),
                      L.layernorm_backward, "layernorm_backward: ", "layernorm_backward"),
        "groupnorm": (lambda be: L.spatial_groupnorm_forward(a(be, 2, 4, 2, 2), a(be, 1, 4, 1, 1),
                                                             a(be, 1, 4, 1, 1), 2, {}),
                      L.spatial_groupnorm_backward, "spatial_groupnorm_backward: ", "spatial_groupnorm_backward"),
        "dropout_train": (lambda be: L.dropout_forward(a(be, 4, 5), {"p": 0.5, "mode": "train", "seed": 3}),
                          L.dropout_backward, "dropout_backward: ", "dropout_backward"),
        "dropout_test": (lambda be: L.dropout_forward(a(be, 4, 5), {"p": 0.5, "mode": "test"}),
                         L.dropout_backward, "dropout_backward: ", "dropout_backward"),
        # conv and pool keep their earlier messages (pinned by tests/test_conv.py, test_pool.py)
        "conv": (lambda be: L.conv_forward(*conv_args(be), _CONV), L.conv_backward, "", "conv_backward"),
        "max_pool": (lambda be: L.max_pool_forward(a(be, 2, 3, 4, 4), _POOL), L.max_pool_backward, "",
                     "max_pool_backward"),
        "avg_pool": (lambda be: L.avg_pool_forward(a(be, 2, 3, 4, 4), _POOL), L.avg_pool_backward,
                     "avg_pool_backward: ", "avg_pool_backward"),
        # sandwiches: the first part the gradient reaches checks it
        "affine_relu": (lambda be: lu.affine_relu_forward(a(be, 4, 5), a(be, 5, 3, seed=1), a(be, 3, seed=2)),
                        lu.affine_relu_backward, "relu_backward: ", "affine_relu_backward"),
        "affine_bn_relu": (affine_norm(lu.affine_bn_relu_forward, {"mode": "train"}), lu.affine_bn_relu_backward,
                           "relu_backward: ", "affine_bn_relu_backward"),
        "affine_ln_relu": (affine_norm(lu.affine_ln_relu_forward, {}), lu.affine_ln_relu_backward,
                           "relu_backward: ", "affine_ln_relu_backward"),
        "conv_relu": (lambda be: lu.conv_relu_forward(*conv_args(be), _CONV), lu.conv_relu_backward,
                      "relu_backward: ", "conv_relu_backward"),
        "conv_relu_pool": (lambda be: lu.conv_relu_pool_forward(*conv_args(be), _CONV, _POOL),
                           lu.conv_relu_pool_backward, "relu_backward: ", "conv_relu_pool_backward"),
        "conv_bn_relu": (lambda be: lu.conv_bn_relu_forward(*conv_norm(be), _CONV, {"mode": "train"}),
                         lu.conv_bn_relu_backward, "relu_backward: ", "conv_bn_relu_backward"),
        "conv_bn_relu_pool": (lambda be: lu.conv_bn_relu_pool_forward(*conv_norm(be), _CONV, {"mode": "train"}, _POOL),
                              lu.conv_bn_relu_pool_backward, "", "conv_bn_relu_pool_backward"),
    }


_CASES = _cases()


def _forward_name(backward_name):
    return backward_name.replace("_backward_alt", "_forward").replace("_backward", "_forward")


@pytest.mark.parametrize("name", list(_CASES))
def test_backward_refuses_a_broadcasting_dout(backend, name):
    forward, backward, prefix, fn = _CASES[name]
    out, cache = forward(backend)
    shape = tuple(out.shape)
    esc = re.escape
    for bad in (shape[1:], (1,) + shape[1:], shape[:-1] + (1,), shape[:-1] + (shape[-1] + 1,)):
        with pytest.raises(ValueError, match="^" + esc(f"{prefix}dout: expected shape {shape} (the forward's "
                                                       f"output), got {bad}")):
            backward(_arr(backend, *bad), cache)
    dtype_msg = "(the dtype of x)" if prefix == "" else "(the forward's dtype)"
    with pytest.raises(TypeError, match="^" + esc(f"{prefix}dout: expected dtype float64 {dtype_msg}, got float32")):
        backward(_arr(backend, *shape, dtype="float32"), cache)
    with pytest.raises(TypeError, match="^" + esc(f"{fn}: cache must be what {_forward_name(fn)} returned, "
                                                  f"got NoneType")):
        backward(_arr(backend, *shape), None)
    # (the right dout still works: every layer test runs these backwards with one)


def test_affine_backward_with_a_wrong_dout_names_itself(backend):
    """Was a raw NumPy matmul error (and an unpacking error for a None cache)."""
    _, cache = L.affine_forward(_arr(backend, 4, 5), _arr(backend, 5, 3), _arr(backend, 3))
    with pytest.raises(ValueError, match=r"^affine_backward: dout: expected shape \(4, 3\) \(the forward's output\), "
                                         r"got \(4, 7\)$"):
        L.affine_backward(_arr(backend, 4, 7), cache)
    with pytest.raises(TypeError, match=r"^affine_backward: cache must be what affine_forward returned, got NoneType$"):
        L.affine_backward(_arr(backend, 4, 3), None)
    with pytest.raises(TypeError, match=r"^affine_backward: cache must be what affine_forward returned, got tuple$"):
        L.affine_backward(_arr(backend, 4, 3), tuple(cache))  # a hand-made tuple is not the forward's cache


# -- point 5: unknown keys ------------------------------------------------------------------

_KEY_CASES = {
    "conv_param": (lambda be, p: L.conv_forward(_arr(be, 1, 1, 4, 4), _arr(be, 1, 1, 3, 3), _arr(be, 1), p),
                   {"stride": 1, "pad": 1, "dilation": 2},
                   r"^conv_param: unknown key 'dilation' \(accepted: 'stride', 'pad', 'max_col_bytes', "
                   r"'grad_algorithm'\)$"),
    "pool_param": (lambda be, p: L.max_pool_forward(_arr(be, 1, 1, 4, 4), p), dict(_POOL, pool_size=2),
                   r"^pool_param: unknown key 'pool_size'; did you mean 'pool_width'\?"),
    "pool_param_avg": (lambda be, p: L.avg_pool_forward(_arr(be, 1, 1, 4, 4), p), dict(_POOL, pool_size=2),
                       r"^pool_param: unknown key 'pool_size'; did you mean 'pool_width'\?"),
    "bn_param": (lambda be, p: L.batchnorm_forward(_arr(be, 4, 3), _arr(be, 3), _arr(be, 3), p),
                 {"mode": "train", "momemtum": 0.5}, r"^bn_param: unknown key 'momemtum'; did you mean 'momentum'\?"),
    "ln_param": (lambda be, p: L.layernorm_forward(_arr(be, 4, 3), _arr(be, 3), _arr(be, 3), p),
                 {"epsilon": 1e-3}, r"^ln_param: unknown key 'epsilon'; did you mean 'eps'\?"),
    "gn_param": (lambda be, p: L.spatial_groupnorm_forward(_arr(be, 2, 4, 2, 2), _arr(be, 1, 4, 1, 1),
                                                           _arr(be, 1, 4, 1, 1), 2, p),
                 {"G": 2}, r"^gn_param: unknown key 'G' \(accepted: 'eps', 'mode'\)$"),
    "dropout_param": (lambda be, p: L.dropout_forward(_arr(be, 4, 3), p), {"p": 0.5, "mode": "train", "sed": 1},
                      r"^dropout_param: unknown key 'sed'; did you mean 'seed'\?"),
}


@pytest.mark.parametrize("name", list(_KEY_CASES))
def test_unknown_layer_keys_are_refused(backend, name):
    call, param, match = _KEY_CASES[name]
    before = dict(param)
    with pytest.raises(ValueError, match=match):
        call(backend, param)
    assert param == before


_ACCEPTED = {
    "sgd": ("learning_rate",),
    "sgd_momentum": ("learning_rate", "momentum", "velocity"),
    "rmsprop": ("learning_rate", "decay_rate", "epsilon", "cache"),
    "adam": ("learning_rate", "beta1", "beta2", "epsilon", "m", "v", "t"),
}


@pytest.mark.parametrize("rule", list(_ACCEPTED))
def test_update_rules_accept_their_own_keys_only(backend, rule):
    fn = optim.get_update_rule(rule)
    w, dw = _arr(backend, 3, 2), _arr(backend, 3, 2, seed=1)
    config = {"learning_rate": 0.5}
    for _ in range(3):  # what a rule writes back is accepted on the next step
        w, config = fn(w, dw, config)
    assert set(config) == set(_ACCEPTED[rule])
    accepted = ", ".join(map(repr, _ACCEPTED[rule]))
    with pytest.raises(ValueError, match=re.escape(f"config: unknown key 'lr'; did you mean 'learning_rate'? "
                                                   f"(accepted: {accepted})")):
        fn(w, dw, {"lr": 0.5})
    others = sorted({k for keys in _ACCEPTED.values() for k in keys} - set(_ACCEPTED[rule]))
    for key in others:  # another rule's hyper-parameter or state is not silently ignored
        with pytest.raises(ValueError, match=f"^config: unknown key {key!r}"):
            fn(w, dw, {key: 0.9})
    with pytest.raises(ValueError, match=r"^optim_config: unknown key 'lr'; did you mean 'learning_rate'\?"):
        optim.check_config_keys(rule, {"lr": 0.5})
    optim.check_config_keys(rule, dict(config))
    optim.check_config_keys(lambda w, dw, c=None: (w, c), {"anything": 1})  # custom rules are not checked


def test_solver_optim_config_typo_is_refused(backend):
    """optim_config={'lr': 0.5} trained at adam's default 1e-3, silently."""
    rng = np.random.default_rng(0)
    data = {"X_train": rng.standard_normal((20, 4)), "y_train": rng.integers(0, 3, 20),
            "X_val": rng.standard_normal((5, 4)), "y_val": rng.integers(0, 3, 5)}
    model = portnn.FullyConnectedNet([5], input_dim=4, num_classes=3, seed=0, dtype="float64", backend=backend)
    before = {k: to_np(v).copy() for k, v in model.params.items()}
    with pytest.raises(ValueError, match=r"unknown key 'lr'; did you mean 'learning_rate'\?"):
        portnn.Solver(model, data, update_rule="adam", optim_config={"lr": 0.5}, num_epochs=1, verbose=False,
                      seed=0).train()
    for k, v in model.params.items():
        np.testing.assert_array_equal(to_np(v), before[k])


def test_models_pass_only_known_keys(backend):
    """The dicts the models build (bn_param with running statistics, dropout_param with a
    seed, conv/pool params) pass the key checks through a few training steps."""
    rng = np.random.default_rng(0)
    X = backend.asarray(rng.standard_normal((6, 1, 6, 6)), dtype="float64")
    y = backend.asarray(rng.integers(0, 3, 6))
    for norm in ("batchnorm", "layernorm"):
        fcn = portnn.FullyConnectedNet([5, 4], input_dim=36, num_classes=3, normalization=norm,
                                       dropout_keep_ratio=0.7, seed=0, dtype="float64", backend=backend)
        for _ in range(2):
            fcn.loss(X, y)
        assert tuple(fcn.loss(X).shape) == (6, 3)
    cnn = portnn.ThreeLayerConvNet(input_dim=(1, 6, 6), num_filters=2, filter_size=3, hidden_dim=4,
                                   num_classes=3, seed=0, dtype="float64", backend=backend)
    cnn.loss(X, y)


# -- point 11 (layer parts): booleans, None and lists, the blamed argument ----------------------


def test_booleans_are_not_numbers(backend):
    x, g, b = _arr(backend, 4, 3), _arr(backend, 3), _arr(backend, 3)
    p = {"mode": "train", "momentum": True}
    with pytest.raises(TypeError, match=r"^momentum: expected a real number, got True$"):
        L.batchnorm_forward(x, g, b, p)
    assert "running_mean" not in p
    with pytest.raises(TypeError, match=r"^p \(keep probability\): expected a real number, got True$"):
        L.dropout_forward(x, {"p": True, "mode": "train"})
    with pytest.raises(TypeError, match=r"^eps: expected a real number, got False$"):
        L.layernorm_forward(x, g, b, {"eps": False})
    for rule in _ACCEPTED:
        with pytest.raises(TypeError, match=r"^config\['learning_rate'\]: expected a real number, got True$"):
            optim.get_update_rule(rule)(x, x, {"learning_rate": True})


def test_missing_dicts_and_lists_get_clear_type_errors(backend):
    x, g, b = _arr(backend, 4, 5), _arr(backend, 5), _arr(backend, 5)
    with pytest.raises(TypeError, match=r"^dropout_param: expected a dict with 'p' and 'mode', got None$"):
        L.dropout_forward(x, None)
    with pytest.raises(TypeError, match=r"^bn_param: expected a dict with 'mode' \('train' or 'test'\), got None$"):
        L.batchnorm_forward(x, g, b, None)
    p = {"mode": "train", "running_mean": [0] * 5}
    with pytest.raises(TypeError, match=r"^bn_param\['running_mean'\]: expected an array of x's backend and device, "
                                        r"got list$"):
        L.batchnorm_forward(x, g, b, p)
    assert p == {"mode": "train", "running_mean": [0] * 5}


def test_affine_blames_a_one_dimensional_x(backend):
    with pytest.raises(ValueError, match=r"^x: expected at least 2 dimensions \(N, d1, \.\.\.\), got shape \(5,\)$"):
        L.affine_forward(_arr(backend, 5), _arr(backend, 5, 3), _arr(backend, 3))
    with pytest.raises(ValueError, match=r"^x: expected at least 2 dimensions"):
        L.affine_forward(_arr(backend, 5), _arr(backend, 1, 3), _arr(backend, 3))  # was N=5 samples of 1 feature


@pytest.mark.parametrize("hidden_dims,exc,match", [
    (50, TypeError, r"^hidden_dims: expected a sequence of layer sizes such as \[100, 100\], got 50$"),
    ("100", TypeError, r"^hidden_dims: expected a sequence of layer sizes such as \[100, 100\], got '100'$"),
    (None, TypeError, r"^hidden_dims: expected a sequence of layer sizes such as \[100, 100\], got None$"),
    ([100, 1.5], TypeError, r"^hidden_dims\[1\]: expected an integer >= 1, got 1.5$"),
    (["100"], TypeError, r"^hidden_dims\[0\]: expected an integer >= 1, got '100'$"),
    ([True], TypeError, r"^hidden_dims\[0\]: expected an integer >= 1, got True \(a bool\)$"),
    ([10, 0], ValueError, r"^hidden_dims\[1\]: expected an integer >= 1, got 0$"),
    ([10, -3], ValueError, r"^hidden_dims\[1\]: expected an integer >= 1, got -3$"),
])
def test_hidden_dims_must_be_a_sequence_of_sizes(hidden_dims, exc, match):
    with pytest.raises(exc, match=match):
        portnn.FullyConnectedNet(hidden_dims, input_dim=64, backend="numpy")


def test_hidden_dims_accepts_sequences_of_ints():
    for dims in ([7, 5], (7, 5), range(5, 7), np.array([7, 5])):
        model = portnn.FullyConnectedNet(dims, input_dim=4, num_classes=3, seed=0, backend="numpy")
        assert model.num_layers == 3
        assert all(type(v) is int for v in model.config["hidden_dims"])
