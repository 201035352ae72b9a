"""Sequential and portnn.blocks: whole-network gradient checks of every block type,
L2 on weights only, parity across backends (also after Solver steps), equivalence
with ThreeLayerConvNet / FullyConnectedNet (and with their pre-BlockModel code),
save / load / exact resume, data-parallel training, the compiled jax step, summary(),
and the running-statistics guard. The bad inputs (shape inference errors, bad
constructor arguments) are rows of tests/test_bad_inputs.py (docs/errors.md)."""

import json
import math
import re

import numpy as np
import pytest

import portnn
from portnn import Sequential, Solver
from portnn import layer_utils as lu
from portnn import layers as L
from portnn.backends import get_backend
from portnn.blocks import (
    Affine,
    AvgPool,
    BatchNorm,
    Conv,
    Dropout,
    Flatten,
    GlobalAvgPool,
    GroupNorm,
    LayerNorm,
    MaxPool,
    ReLU,
    Residual,
)
from portnn.data import load_digits
from portnn.distributed import ThreadFakeCommunicator
from portnn.models import FullyConnectedNet, ThreeLayerConvNet
from tests.checkpoint_helpers import read_manifest
from tests.helpers import assert_on_backend, grad_ok, loss_of_param, put, to_np

# --------------------------------------------------------------------------- the networks
# Tiny on purpose: every parameter entry of every network is checked numerically
# (2 losses per entry) on every backend; jax eager is the slowest (a few ms a loss).
# Between them they hold every block type and every Conv / pool / norm variant.
NETS = {
    # stride-1 'same' conv, spatial batchnorm, relu -> 2x2 max pool (run as pool -> relu)
    "conv_same-bn4d-maxpool2": ((1, 5, 5), lambda: [Conv(2, 3), BatchNorm(), ReLU(), MaxPool(2), Affine(3)], {}),
    # stride-2 conv (default pad 1), overlapping average pool, Flatten
    "conv_stride2-avgpool_overlap": (
        (1, 6, 6), lambda: [Conv(2, 3, stride=2), ReLU(), AvgPool(2, stride=1), Flatten(), Affine(3)], {}),
    # an even filter with an explicit pad, overlapping 3x3 stride-2 max pool
    "conv_even_pad-maxpool3s2": (
        (1, 5, 5), lambda: [Conv(2, 2, pad=1), ReLU(), MaxPool(3, stride=2), Affine(3)], {}),
    # explicit pad 0, 2x2 average pool, dropout on images, the SVM loss
    "conv_pad0-avgpool2-dropout-svm": (
        (1, 6, 6), lambda: [Conv(2, 3, pad=0), ReLU(), AvgPool(2), Dropout(0.6), Affine(3)], {"loss": "svm"}),
    # layernorm over whole maps, groupnorm (2 groups of 2 channels), global average pool
    "layernorm4d-groupnorm-gap": (
        (1, 3, 3), lambda: [LayerNorm(), Conv(4, 3), GroupNorm(2), ReLU(), GlobalAvgPool(), Affine(3)], {}),
    # features: batchnorm, layernorm, two dropout blocks (streams 1 and 2)
    "mlp-bn-ln-dropout": (
        4, lambda: [Affine(4), BatchNorm(), ReLU(), Dropout(0.6), Affine(3), LayerNorm(), ReLU(), Dropout(0.8),
                    Affine(3)], {}),
    # identity skip on features, a dropout inside the residual
    "residual_identity-features": (
        4, lambda: [Affine(3), Residual(Affine(3), ReLU(), Dropout(0.7), Affine(3)), ReLU(), Affine(3)], {}),
    # projection on images: strided 1x1 conv, 5x5 -> 3x3 (odd size), 1 -> 2 channels, bn inside
    "residual_projection-images": (
        (1, 5, 5), lambda: [Residual(Conv(2, 3, stride=2), BatchNorm(), ReLU(), projection=True), ReLU(),
                            GlobalAvgPool(), Affine(3)], {}),
    # the first block with parameters is a projection around a parameter-free chain
    # (the model's backward skips dx there: only the projection's gradient is computed)
    "residual_projection-around_pool": (
        (1, 6, 6), lambda: [Residual(MaxPool(2), projection=True), ReLU(), Affine(3)], {}),
    # projection on features: affine 4 -> 3
    "residual_projection-features": (
        4, lambda: [Residual(Affine(3), ReLU(), projection=True), ReLU(), Affine(3)], {}),
    # a residual inside a residual, features (batchnorm in the inner one)
    "residual_nested-features": (
        4, lambda: [Affine(3), Residual(Affine(3), ReLU(), Residual(BatchNorm(), ReLU(), Affine(3))), Affine(3)], {}),
    # a residual inside a residual, images (groupnorm in the inner one)
    "residual_nested-images": (
        (1, 4, 4), lambda: [Residual(Conv(1, 3), ReLU(), Residual(Conv(1, 3), GroupNorm(1))), ReLU(), MaxPool(2),
                            Affine(3)], {}),
}
REG = 0.1


def _batch(input_dim, n=3, seed=0):
    rng = np.random.default_rng(seed)
    shape = (input_dim,) if isinstance(input_dim, int) else input_dim
    return rng.standard_normal((n, *shape)), rng.integers(0, 3, size=n)


def _net(net_id, backend, seed=3, reg=REG, dtype="float64"):
    input_dim, blocks, kw = NETS[net_id]
    return Sequential(blocks(), input_dim=input_dim, reg=reg, weight_init=0.7, dtype=dtype, seed=seed,
                      backend=backend, **kw)


def _off_zero(model, backend, seed=5):
    """Random biases and shifts (and gammas around 1): with the zero initial biases a
    sample whose units dropout removed entirely is a constant row, which a norm maps to
    exactly 0 and a following relu has its kink at; random ones keep the check off kinks."""
    rng = np.random.default_rng(seed)
    for k, v in model.params.items():
        local = k.rsplit(".", 1)[-1]
        if local != "W":
            value = rng.uniform(0.5, 1.5, tuple(v.shape)) if local == "gamma" else 0.3 * rng.standard_normal(
                tuple(v.shape))
            model.params[k] = put(backend, value)


#: Entries per parameter array checked numerically off numpy (numpy checks every entry;
#: test_same_seed_same_init_loss_and_grads_everywhere then ties every entry of every
#: backend to numpy's). Each entry costs two losses, ~15 ms on eager jax.
ENTRIES_OFF_NUMPY = 6


def _numerical_gradient(f, w, backend, h=1e-6, entries=None, seed=0):
    """Central differences of f at w (a backend array), every entry or ``entries``
    of them (seeded); returns (flat indices, gradient at those indices) on the host."""
    host = to_np(w).astype(np.float64).copy()
    flat = host.reshape(-1)
    idx = np.arange(flat.size)
    if entries is not None and flat.size > entries:
        idx = np.sort(np.random.default_rng(seed).choice(flat.size, entries, replace=False))
    grad = np.empty(idx.size)
    for j, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + h
        plus = f(put(backend, host))
        flat[i] = old - h
        minus = f(put(backend, host))
        flat[i] = old
        grad[j] = (plus - minus) / (2 * h)
    return idx, grad


@pytest.mark.parametrize("net_id", sorted(NETS))
def test_gradient_check_whole_network(backend, net_id):
    model = _net(net_id, backend)
    _off_zero(model, backend)
    X, y = put(backend, *_batch(NETS[net_id][0]))
    loss, grads = model.loss(X, y)
    assert isinstance(loss, float) and list(grads) == list(model.params)
    entries = None if backend.name == "numpy" else ENTRIES_OFF_NUMPY
    for k, name in enumerate(model.params):
        assert_on_backend(grads[name], backend)
        idx, num = _numerical_gradient(loss_of_param(model, name, X, y), model.params[name], backend,
                                       entries=entries, seed=k)
        assert grad_ok(to_np(grads[name]).reshape(-1)[idx], num), name


@pytest.mark.parametrize("net_id", sorted(NETS))
def test_l2_applies_to_the_weights_only(backend, net_id):
    """loss(reg=r) - loss(reg=0) = 0.5 r sum of W**2 over exactly the names ending in
    "W" (conv filters, affine and projection weights), and only their grads move."""
    model = _net(net_id, backend)
    X, y = put(backend, *_batch(NETS[net_id][0]))
    model.reg = 0.0
    loss0, grads0 = model.loss(X, y)
    model.reg = REG
    loss1, grads1 = model.loss(X, y)
    weights = [k for k in model.params if k.endswith("W")]
    assert weights and all(k.rsplit(".", 1)[-1] in ("W", "b", "gamma", "beta") for k in model.params)
    penalty = 0.5 * REG * sum(float(np.sum(to_np(model.params[k]) ** 2)) for k in weights)
    assert abs((loss1 - loss0) - penalty) < 1e-12
    for k, p in model.params.items():
        expected = REG * to_np(p) if k in weights else np.zeros(tuple(p.shape))
        np.testing.assert_allclose(to_np(grads1[k]) - to_np(grads0[k]), expected, rtol=1e-12, atol=1e-15,
                                   err_msg=k)


def test_projection_and_nested_names():
    m = _net("residual_projection-images", "numpy")
    assert list(m.params) == ["0.0.W", "0.0.b", "0.1.gamma", "0.1.beta", "0.proj.W", "0.proj.b", "3.W", "3.b"]
    assert tuple(m.params["0.proj.W"].shape) == (2, 1, 1, 1)
    assert m.blocks[0].proj.stride == 2 and m.blocks[0].out_shape == (2, 3, 3)
    assert m._weight_names() == ["0.0.W", "0.proj.W", "3.W"]
    m = _net("residual_nested-features", "numpy")
    assert "1.2.2.W" in m.params and m.buffers() == {} and list(m._buffer_shapes) == [
        "1.2.0.running_mean", "1.2.0.running_var"]


@pytest.mark.parametrize("size", [5, 6, 7, 9])
def test_strided_projection_fits_odd_and_even_sizes(size):
    """A stride-2 'same' conv maps H to ceil(H / 2); the 1x1 projection must use stride 2 too."""
    m = Sequential([Residual(Conv(2, 3, stride=2), projection=True), GlobalAvgPool(), Affine(3)],
                   input_dim=(1, size, size), dtype="float64", seed=0)
    assert m.blocks[0].proj.stride == 2 and m.blocks[0].out_shape == (2, -(-size // 2), -(-size // 2))


def test_input_dim_spellings():
    """NumPy integers are accepted wherever Python ints are (docs/design.md, rule 6); bools are not."""
    for dim, shape in ((4, (4,)), (np.int64(4), (4,)), ([4], (4,)), ((1, 3, 3), (1, 3, 3)),
                       (np.array([1, 3, 3]), (1, 3, 3))):
        m = Sequential([Affine(2)], input_dim=dim, seed=0)
        assert m.input_shape == shape and m.config["input_dim"] == list(shape)
        json.dumps(m.config)
    for bad in (True, (True, 3, 3), (1.5,), (0,), "4"):
        with pytest.raises(ValueError, match="input_dim: expected"):
            Sequential([Affine(2)], input_dim=bad)


def test_dropout_masks_follow_seed_and_rng_step(backend):
    model = _net("mlp-bn-ln-dropout", backend)
    assert [b.stream for b in model.blocks if isinstance(b, Dropout)] == [1, 2]
    X, y = put(backend, *_batch(4))
    a = model.loss(X, y)[0]
    assert model.loss(X, y)[0] == a  # the same step: the same masks (the gradient checks rely on it)
    model.advance_rng()
    b = model.loss(X, y)[0]
    assert b != a
    other = _net("mlp-bn-ln-dropout", backend, seed=4)
    other.load_state_dict(model.state_dict())
    other.rng_step = model.rng_step
    assert other.loss(X, y)[0] != b  # another seed: other masks
    model.rng_step = 0
    assert model.loss(X, y)[0] == a


# --------------------------------------------------------------------------- parity across backends
@pytest.mark.parametrize("net_id", sorted(NETS))
def test_same_seed_same_init_loss_and_grads_everywhere(backend, net_id):
    ref, model = _net(net_id, "numpy"), _net(net_id, backend)
    for name, p in model.params.items():
        assert_on_backend(p, backend)
        np.testing.assert_array_equal(to_np(p), to_np(ref.params[name]))  # bit-identical init
    Xh, yh = _batch(NETS[net_id][0], seed=1)  # n=3 as in the gradient check: jax reuses its compiled ops
    loss, grads = model.loss(*put(backend, Xh, yh))
    loss_ref, grads_ref = ref.loss(*put(get_backend("numpy"), Xh, yh))
    assert abs(loss - loss_ref) < 1e-12  # dropout masks are identical too
    for name in grads_ref:
        np.testing.assert_allclose(to_np(grads[name]), grads_ref[name], rtol=1e-10, atol=1e-12, err_msg=name)
    for k, v in ref.buffers().items():
        np.testing.assert_allclose(to_np(model.buffers()[k]), v, rtol=1e-12, atol=1e-14)
    scores = model.loss(put(backend, Xh))  # test mode: running statistics, no dropout
    np.testing.assert_allclose(to_np(scores), ref.loss(put(get_backend("numpy"), Xh)), rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def digits():
    d = load_digits(flatten=False, dtype="float64")
    return {"X_train": d["X_train"][:40], "y_train": d["y_train"][:40],
            "X_val": d["X_val"][:20], "y_val": d["y_val"][:20]}


def resnet_blocks():
    """A small ResNet on the (1, 8, 8) digits: batchnorm (spatial and on features),
    dropout, residuals with and without projection (kept small: the Solver tests run
    it on every backend, and jax eager compiles each op of each new shape once)."""
    return [Conv(3, 3), BatchNorm(), ReLU(),
            Residual(Conv(3, 3), GroupNorm(1), ReLU(), Dropout(0.8)),
            Residual(Conv(4, 3, stride=2), ReLU(), projection=True), MaxPool(2), Dropout(0.9),
            Affine(6), BatchNorm(), ReLU(), Residual(Affine(6), ReLU()), Affine(10)]


def _resnet(backend, dtype="float64", seed=2, blocks=resnet_blocks):
    return Sequential(blocks(), input_dim=(1, 8, 8), reg=1e-3, dtype=dtype, seed=seed, backend=backend)


def _solver(model, data, **kw):
    kw.setdefault("update_rule", "sgd_momentum")
    kw.setdefault("optim_config", {"learning_rate": 0.05})
    kw.setdefault("batch_size", 20)
    kw.setdefault("num_epochs", 1)
    kw.setdefault("num_train_samples", 20)  # accuracies on 20 samples: the batch shape (jax compiles per shape)
    return Solver(model, data, verbose=False, seed=5, **kw)


def test_solver_steps_same_on_every_backend(backend, digits):
    """Four seeded sgd_momentum steps (dropout, batchnorm, residuals) on backend == on numpy."""
    ref = _solver(_resnet("numpy"), digits, num_epochs=2).train()
    got = _solver(_resnet(backend), digits, num_epochs=2).train()
    assert len(got.loss_history) == 4
    np.testing.assert_allclose(got.loss_history, ref.loss_history, rtol=1e-10)
    assert got.val_acc_history == ref.val_acc_history
    for k, v in ref.model.state_dict().items():
        np.testing.assert_allclose(to_np(got.model.state_dict()[k]), to_np(v), rtol=1e-9, atol=1e-12, err_msg=k)


# --------------------------------------------------------------------------- the classic models as blocks
TLCN_NAMES = {"0.W": "W1", "0.b": "b1", "3.W": "W2", "3.b": "b2", "5.W": "W3", "5.b": "b3"}


def _old_three_layer_convnet(params, X, y, filter_size, reg):
    """ThreeLayerConvNet's loss as it was written before BlockModel (layer_utils sandwiches)."""
    conv_param = {"stride": 1, "pad": (filter_size - 1) // 2}
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    p = params
    h1, c1 = lu.conv_relu_pool_forward(X, p["W1"], p["b1"], conv_param, pool_param)
    h2, c2 = lu.affine_relu_forward(h1, p["W2"], p["b2"])
    scores, c3 = L.affine_forward(h2, p["W3"], p["b3"])
    loss, dscores = L.softmax_loss(scores, y)
    grads = {}
    dh2, grads["W3"], grads["b3"] = L.affine_backward(dscores, c3)
    dh1, grads["W2"], grads["b2"] = lu.affine_relu_backward(dh2, c2)
    _, grads["W1"], grads["b1"] = lu.conv_relu_pool_backward(dh1, c1)
    for k in ("W1", "W2", "W3"):
        loss += 0.5 * reg * float(np.sum(to_np(p[k]) ** 2))
        grads[k] = grads[k] + reg * p[k]
    return loss, grads


def _assert_same_loss(a, b, rtol=1e-12):
    (la, ga), (lb, gb) = a, b
    assert abs(la - lb) <= rtol * abs(lb)
    assert set(ga) == set(gb)
    for k in gb:
        np.testing.assert_allclose(to_np(ga[k]), to_np(gb[k]), rtol=rtol, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("filter_size", [3, 4])
def test_sequential_is_three_layer_convnet(backend, filter_size):
    C, H, W = 2, 6, 5
    kw = dict(reg=0.05, seed=1, dtype="float64", backend=backend)
    cnn = ThreeLayerConvNet(input_dim=(C, H, W), num_filters=3, filter_size=filter_size, hidden_dim=7,
                            num_classes=4, weight_scale=0.3, **kw)

    def seq(seed):
        blocks = [Conv(3, filter_size, pad=(filter_size - 1) // 2), ReLU(), MaxPool(2), Affine(7), ReLU(), Affine(4)]
        return Sequential(blocks, input_dim=(C, H, W), weight_init=0.3, **dict(kw, seed=seed))

    same_seed = seq(1)  # weights drawn in block order: the same initial weights
    assert {TLCN_NAMES[k] for k in same_seed.params} == set(cnn.params)
    for k, v in same_seed.params.items():
        np.testing.assert_array_equal(to_np(v), to_np(cnn.params[TLCN_NAMES[k]]), err_msg=k)
    model = seq(9)  # another seed, then ThreeLayerConvNet's parameters under their Sequential names
    assert not np.array_equal(to_np(model.params["0.W"]), to_np(cnn.params["W1"]))
    model.load_state_dict({k: cnn.params[v] for k, v in TLCN_NAMES.items()})
    rng = np.random.default_rng(2)
    X, y = put(backend, rng.standard_normal((3, C, H, W)), rng.integers(0, 4, size=3))
    loss, grads = model.loss(X, y)
    _assert_same_loss((loss, {TLCN_NAMES[k]: g for k, g in grads.items()}), cnn.loss(X, y))
    _assert_same_loss(cnn.loss(X, y), _old_three_layer_convnet(cnn.params, X, y, filter_size, 0.05))
    np.testing.assert_allclose(to_np(model.loss(X)), to_np(cnn.loss(X)), rtol=1e-12, atol=1e-14)


def _fcn_blocks(normalization, keep, hidden=(5, 4), num_classes=3):
    norm = {"batchnorm": BatchNorm, "layernorm": LayerNorm}[normalization]
    blocks = []
    for width in hidden:
        blocks += [Affine(width), norm(), ReLU(), Dropout(keep)]
    return blocks + [Affine(num_classes)]


def _fcn_name(key):
    """Sequential's name of [Affine, Norm, ReLU, Dropout] x 2 + [Affine] -> FullyConnectedNet's."""
    block, local = key.split(".", 1)
    layer = int(block) // 4 + 1
    return f"bn{layer}.{local}" if local.startswith("running") else f"{local}{layer}"


def _old_fcn(model, X, y, norm_params):
    """FullyConnectedNet's loss as it was written before BlockModel (sandwiches + dropout
    with the mask seed of layer i), in train mode. norm_params: one dict per hidden
    layer, kept by the caller across steps (batchnorm's running statistics live there)."""
    p, n = model.params, model.num_layers
    forward, backward = {"batchnorm": (lu.affine_bn_relu_forward, lu.affine_bn_relu_backward),
                         "layernorm": (lu.affine_ln_relu_forward, lu.affine_ln_relu_backward)}[model.normalization]
    caches, h = [], X
    for i in range(1, n):
        norm_params[i - 1]["mode"] = "train"
        h, cache = forward(h, p[f"W{i}"], p[f"b{i}"], p[f"gamma{i}"], p[f"beta{i}"], norm_params[i - 1])
        h, drop_cache = L.dropout_forward(h, {"p": model.dropout_keep_ratio, "mode": "train",
                                              "seed": model._dropout_seed(i)})
        caches.append((cache, drop_cache))
    scores, out_cache = L.affine_forward(h, p[f"W{n}"], p[f"b{n}"])
    loss, dscores = L.softmax_loss(scores, y)
    grads = {}
    dh, grads[f"W{n}"], grads[f"b{n}"] = L.affine_backward(dscores, out_cache)
    for i in range(n - 1, 0, -1):
        cache, drop_cache = caches[i - 1]
        dh, grads[f"W{i}"], grads[f"b{i}"], grads[f"gamma{i}"], grads[f"beta{i}"] = backward(
            L.dropout_backward(dh, drop_cache), cache)
    for i in range(1, n + 1):
        loss += 0.5 * model.reg * float(np.sum(to_np(p[f"W{i}"]) ** 2))
        grads[f"W{i}"] = grads[f"W{i}"] + model.reg * p[f"W{i}"]
    return loss, grads


@pytest.mark.parametrize("normalization", ["batchnorm", "layernorm"])
def test_sequential_is_fully_connected_net(backend, normalization):
    kw = dict(reg=0.1, seed=3, dtype="float64", backend=backend)
    fcn = FullyConnectedNet([5, 4], input_dim=6, num_classes=3, normalization=normalization,
                            dropout_keep_ratio=0.7, weight_scale=0.5, **kw)
    seq = Sequential(_fcn_blocks(normalization, 0.7), input_dim=6, weight_init=0.5, **kw)
    assert {_fcn_name(k) for k in seq.params} == set(fcn.params)
    for k, v in seq.params.items():  # the same seed and weight_init: the same initial weights
        np.testing.assert_array_equal(to_np(v), to_np(fcn.params[_fcn_name(k)]), err_msg=k)
    rng = np.random.default_rng(4)
    X, y = put(backend, rng.standard_normal((4, 6)), rng.integers(0, 3, size=4))
    norm_params = [{}, {}]
    for _ in range(2):  # the i-th Dropout block draws FullyConnectedNet's layer-i masks, at every step
        loss, grads = seq.loss(X, y)
        ref = fcn.loss(X, y)  # once per step: each train-mode call moves the running statistics
        _assert_same_loss((loss, {_fcn_name(k): g for k, g in grads.items()}), ref)
        _assert_same_loss(ref, _old_fcn(fcn, X, y, norm_params))
        seq.advance_rng()
        fcn.advance_rng()
    if normalization == "batchnorm":
        assert {_fcn_name(k) for k in seq.buffers()} == set(fcn.buffers())
        for k, v in seq.buffers().items():  # the running statistics of two steps
            name = _fcn_name(k)
            np.testing.assert_allclose(to_np(v), to_np(fcn.buffers()[name]), rtol=1e-12, atol=1e-15)
            layer, key = name[2:].split(".")
            np.testing.assert_allclose(to_np(v), to_np(norm_params[int(layer) - 1][key]), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(to_np(seq.loss(X)), to_np(fcn.loss(X)), rtol=1e-12, atol=1e-14)


def test_blocks_are_copied_and_configs_rebuild_them():
    """One block list describes several networks; config dicts build the same network."""
    blocks = resnet_blocks()
    a = Sequential(blocks, input_dim=(1, 8, 8), seed=0)
    b = Sequential(blocks, input_dim=(1, 8, 8), seed=0)
    assert all(blk.in_shape is None and not blk.param_names for blk in blocks)  # the caller's blocks untouched
    assert a.blocks[0] is not b.blocks[0] and a.blocks[0] is not blocks[0]
    c = Sequential(json.loads(json.dumps(a.config["blocks"])), input_dim=(1, 8, 8), seed=0)
    assert c.config == a.config and list(c.params) == list(a.params)
    for k, v in a.params.items():
        np.testing.assert_array_equal(c.params[k], v)
    assert [repr(x) for x in c.blocks] == [repr(x) for x in a.blocks]


# --------------------------------------------------------------------------- save / load / resume
def test_save_load_roundtrip_with_buffers_and_residuals(backend, digits, tmp_path):
    model = _resnet(backend)
    _solver(model, digits).train()  # batchnorm running statistics exist now
    path = str(tmp_path / "seq.npz")
    portnn.save(model, path)
    manifest = read_manifest(path)
    assert json.loads(open(path + ".json").read()) == manifest  # the architecture is plain JSON
    mmeta = manifest["meta"]["model"]
    assert mmeta["class"] == "Sequential" and mmeta["rng_step"] == model.rng_step == 2
    assert mmeta["config"]["blocks"] == [b.config() for b in model.blocks]
    assert mmeta["config"]["input_dim"] == [1, 8, 8]
    residual = mmeta["config"]["blocks"][4]
    assert residual["block"] == "Residual" and residual["projection"] is True
    assert [b["block"] for b in residual["blocks"]] == ["Conv", "ReLU"]
    assert residual["blocks"][0] == {"block": "Conv", "num_filters": 4, "filter_size": 3, "stride": 2,
                                     "pad": None}
    with np.load(path, allow_pickle=False) as z:  # nothing pickled
        assert {"model.4.proj.W", "model.1.running_var", "model.8.running_mean"} <= set(z.files)
    for target in (backend, "numpy"):
        loaded = portnn.load(path, backend=target)
        assert type(loaded) is Sequential and loaded.config == model.config
        assert loaded.rng_step == model.rng_step and loaded.running_stats_missing() == []
        for k, v in model.state_dict().items():
            np.testing.assert_array_equal(to_np(loaded.state_dict()[k]), to_np(v), err_msg=k)
        X = digits["X_val"]
        if target == backend:
            np.testing.assert_array_equal(to_np(loaded.loss(put(backend, X))), to_np(model.loss(put(backend, X))))
        np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def _resume_solver(backend, data, epochs, prefix=None):
    model = _resnet(backend, seed=4)
    return _solver(model, data, update_rule="adam", optim_config={"learning_rate": 3e-3}, lr_decay=0.9,
                   num_epochs=epochs, checkpoint_name=prefix)


def test_interrupted_run_resumes_exactly(backend, digits, tmp_path):
    full = _resume_solver(backend, digits, 3).train()
    _resume_solver(backend, digits, 1, prefix=str(tmp_path / "ck")).train()  # stops after epoch 1
    resumed = portnn.load(str(tmp_path / "ck_epoch_1.npz"), backend=backend, data=digits, num_epochs=3)
    assert resumed.epoch == 1 and resumed.model.rng_step == 2
    resumed.train()
    assert resumed.loss_history == full.loss_history
    assert resumed.train_acc_history == full.train_acc_history and resumed.val_acc_history == full.val_acc_history
    for k, v in full.model.state_dict().items():
        np.testing.assert_array_equal(to_np(resumed.model.state_dict()[k]), to_np(v), err_msg=k)
    assert resumed.model.rng_step == full.model.rng_step == 6


# --------------------------------------------------------------------------- data parallel
run_ranks = ThreadFakeCommunicator.run


def _state(solver):
    return {k: to_np(v) for k, v in solver.model.state_dict().items()}


def _no_batch_statistics():
    """Conv, pools and residuals (with projection): no batchnorm or dropout, so two
    half batches average to the full batch's gradient."""
    return [Conv(3, 3), ReLU(), Residual(Conv(3, 3), GroupNorm(1), ReLU()), AvgPool(2),
            Residual(Conv(4, 3, stride=2), ReLU(), projection=True), LayerNorm(), Affine(10)]


def test_two_ranks_half_batch_equal_one_process_full_batch(digits):
    ref = _solver(_resnet("numpy", blocks=_no_batch_statistics), digits, batch_size=40, num_epochs=3).train()
    for s in run_ranks(2, lambda c: _solver(_resnet("numpy", blocks=_no_batch_statistics), digits, batch_size=20,
                                             num_epochs=3, comm=c).train()):
        for k, v in _state(ref).items():
            np.testing.assert_allclose(_state(s)[k], v, rtol=0, atol=1e-10, err_msg=k)
        np.testing.assert_allclose(s.loss_history, ref.loss_history, rtol=0, atol=1e-10)
        assert s.val_acc_history == ref.val_acc_history and s.iteration == ref.iteration == 3


def test_ranks_agree_with_dropout_and_batchnorm(backend, digits):
    seeds = {}

    def fn(c):
        s = _solver(_resnet(backend), digits, update_rule="adam", num_epochs=2, comm=c)
        seeds[c.rank] = s.model._dropout_seed(1)
        return s.train()

    s0, s1 = run_ranks(2, fn)
    assert seeds[0] != seeds[1]  # each rank draws its own dropout masks
    a, b = _state(s0), _state(s1)
    assert {"1.running_mean", "8.running_var"} <= set(a)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # params and averaged statistics
    assert s0.loss_history == s1.loss_history


# --------------------------------------------------------------------------- the compiled jax step
def test_compiled_step_matches_eager_on_jax(digits):
    """Solver(compile=True) on the ResNet (batchnorm, dropout, residuals): the eager
    run's losses, params and running statistics after four steps. In float64 (the
    eager ops are then the ones the other jax tests here compiled already) the two
    differ by XLA's reordering of float64 rounding only, so the tolerances are far
    below test_compiled_step.py's float32 ones; sgd_momentum keeps the zero-gradient
    biases feeding a batchnorm (pure rounding noise, which adam would scale up to
    full steps) at noise size, so every param is compared."""
    if "jax" not in portnn.available_backends():
        pytest.skip("jax not installed (pip install 'portnn[jax]')")
    import jax

    eager = _solver(_resnet("jax"), digits, num_epochs=2).train()
    compiled = _solver(_resnet("jax"), digits, num_epochs=2, compile=True).train()
    assert len(compiled.loss_history) == len(eager.loss_history) == 4
    np.testing.assert_allclose(compiled.loss_history, eager.loss_history, rtol=1e-10, atol=0)
    assert compiled.val_acc_history == eager.val_acc_history
    assert compiled.model.rng_step == eager.model.rng_step == 4  # the same dropout masks, drawn on the device
    for k, v in eager.model.state_dict().items():
        np.testing.assert_allclose(np.asarray(compiled.model.state_dict()[k]), np.asarray(v), rtol=1e-9, atol=1e-12,
                                   err_msg=k)
    assert not any(isinstance(v, jax.core.Tracer) for v in compiled.model.state_dict().values())


# --------------------------------------------------------------------------- summary
def test_summary_lists_every_block_shape_and_count():
    blocks = [Conv(2, 3), BatchNorm(), ReLU(), MaxPool(2),
              Residual(Conv(2, 3), Residual(Conv(2, 3), ReLU()), GroupNorm(2)),
              Residual(Conv(3, 3, stride=2), ReLU(), projection=True), GlobalAvgPool(), Dropout(0.5), Affine(4)]
    model = Sequential(blocks, input_dim=(1, 8, 8), seed=0)
    lines = []
    assert model.summary(print_fn=lines.append) is None
    assert lines[0] == "Sequential (numpy, float32)"
    assert re.split(r"\s{2,}", lines[1].strip()) == ["block", "layer", "output shape", "params"]
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[3:-1]]
    assert rows == [
        ["input", "(1, 8, 8)"],
        ["0", "Conv(2, 3)", "(2, 8, 8)", "20"],
        ["1", "BatchNorm()", "(2, 8, 8)", "4"],
        ["2", "ReLU()", "(2, 8, 8)", "-"],
        ["3", "MaxPool(2)", "(2, 4, 4)", "-"],
        ["4", "Residual", "(2, 4, 4)", "-"],
        ["4.0", "Conv(2, 3)", "(2, 4, 4)", "38"],
        ["4.1", "Residual", "(2, 4, 4)", "-"],
        ["4.1.0", "Conv(2, 3)", "(2, 4, 4)", "38"],
        ["4.1.1", "ReLU()", "(2, 4, 4)", "-"],
        ["4.2", "GroupNorm(2)", "(2, 4, 4)", "4"],
        ["5", "Residual(projection=True)", "(3, 2, 2)", "-"],
        ["5.0", "Conv(3, 3, stride=2)", "(3, 2, 2)", "57"],
        ["5.1", "ReLU()", "(3, 2, 2)", "-"],
        ["5.proj", "Conv(3, 1, stride=2, pad=0)", "(3, 2, 2)", "9"],
        ["6", "GlobalAvgPool()", "(3,)", "-"],
        ["7", "Dropout(0.5)", "(3,)", "-"],
        ["8", "Affine(4)", "(4,)", "16"],
    ]
    # nested blocks are indented under their residual
    assert re.search(r"^4\.1\.0\s+    Conv\(2, 3\)", lines[3 + 8])
    assert lines[-1] == "parameters: 186 in 16 arrays (6 regularised); buffers: 4"
    assert sum(math.prod(v.shape) for v in model.params.values()) == 186


def test_fully_connected_net_summary_and_names():
    lines = []
    FullyConnectedNet([5], input_dim=4, num_classes=3, normalization="batchnorm", seed=0).summary(lines.append)
    assert lines[0] == "FullyConnectedNet (numpy, float32)"
    assert lines[-1] == "parameters: 53 in 6 arrays (2 regularised); buffers: 10"


# --------------------------------------------------------------------------- running statistics
def test_untrained_batchnorm_refuses_to_predict_then_predicts_after_one_step(backend, digits):
    model = _resnet(backend)
    assert model.running_stats_missing() == ["1", "8"]
    X = put(backend, digits["X_val"])
    msg = r"Sequential: batchnorm block 1 has no running statistics yet: train the model"
    with pytest.raises(ValueError, match=msg):
        model.predict(digits["X_val"])
    with pytest.raises(ValueError, match=msg):
        model.loss(X)
    nested = Sequential([Residual(Affine(4), BatchNorm()), Affine(3)], input_dim=4, backend=backend)
    assert nested.running_stats_missing() == ["0.1"]
    with pytest.raises(ValueError, match=r"batchnorm block 0\.1 has no running statistics"):
        nested.predict(np.ones((2, 4)))
    one_batch = dict(digits, X_train=digits["X_train"][:20], y_train=digits["y_train"][:20])
    _solver(model, one_batch).train()  # one training step
    assert model.running_stats_missing() == [] and model.rng_step == 1
    labels = model.predict(digits["X_val"])
    assert labels.shape == (20,) and labels.dtype == np.int64
    fresh = _resnet(backend)  # a state dict with the statistics makes a fresh model ready too
    fresh.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(fresh.predict(digits["X_val"]), labels)
