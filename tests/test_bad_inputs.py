"""The bad-input matrix (docs/errors.md): every public function and constructor
under wrong ranks/shapes, empty batches, wrong dtypes, NaN/Inf, bad labels, bad
strides/pads/pools, out-of-range hyper-parameters, mixed backends/devices and
non-contiguous inputs.

Each row either raises ValueError/TypeError whose message names the argument and
says what was expected and what came, or has a documented result that the row
checks. Rows with state (bn_param, optimizer config, model params) also check
that nothing was changed by the failing call. ``test_docs_list_every_row``
keeps docs/errors.md and this table in step.
"""

from __future__ import annotations

import math
import pathlib
import re

import numpy as np
import pytest

import portnn
from portnn import blocks as B
from portnn import layers as L
from portnn import optim
from portnn.backends import BackendError, get_backend
from tests.helpers import to_np

ROWS = {}


def row(rid, exc=None, match=None):
    """Register a matrix row. The function gets a Backend and either performs the
    bad call (exc given: it must raise exc matching ``match``), or returns
    ``(call, snapshot)`` when the call involves state (bn_param, optimizer config,
    model params): then ``snapshot()`` must be the same before and after the
    failing ``call()``. With exc None the row checks a documented result itself."""

    def deco(fn):
        assert rid not in ROWS, rid
        ROWS[rid] = (fn, exc, match)
        return fn

    return deco


def A(be, *shape, dtype="float64", seed=0):
    return be.asarray(np.random.default_rng(seed).standard_normal(shape), dtype=dtype)


def I(be, values):
    return be.asarray(np.asarray(values, dtype=np.int64))


def raw(be, host):
    """A host array of any dtype on the backend (bypasses float conversion)."""
    return be.xp.asarray(np.asarray(host), device=be.device)


# ---------------------------------------------------------------- affine / relu
@row("affine.x_w_mismatch", ValueError, r"w: expected shape \(12, M\).*got \(10, 3\)")
def _(be): L.affine_forward(A(be, 2, 3, 4), A(be, 10, 3), A(be, 3))


@row("affine.w_rank", ValueError, r"w: expected a 2-d array, got shape \(12,\)")
def _(be): L.affine_forward(A(be, 2, 12), A(be, 12), A(be, 3))


@row("affine.b_shape", ValueError, r"b: expected shape \(3,\)")
def _(be): L.affine_forward(A(be, 2, 4), A(be, 4, 3), A(be, 4))


@row("affine.x_int", TypeError, r"x: expected a float32 or float64 array, got dtype int64")
def _(be): L.affine_forward(raw(be, np.ones((2, 4), dtype=np.int64)), A(be, 4, 3), A(be, 3))


@row("affine.x_bool", TypeError, r"x: expected a float32 or float64 array, got dtype bool")
def _(be): L.affine_forward(raw(be, np.ones((2, 4), dtype=bool)), A(be, 4, 3), A(be, 3))


@row("affine.x_float16", TypeError, r"x: expected a float32 or float64 array, got dtype float16")
def _(be):
    if not hasattr(be.xp, "float16"):
        pytest.skip(f"{be.name} has no float16")
    L.affine_forward(be.xp.astype(A(be, 2, 4), be.xp.float16), A(be, 4, 3), A(be, 3))


@row("affine.x_complex", TypeError, r"x: expected a float32 or float64 array, got dtype complex128")
def _(be): L.affine_forward(raw(be, np.ones((2, 4), dtype=np.complex128)), A(be, 4, 3), A(be, 3))


@row("affine.dtype_mix", TypeError, r"w: expected dtype float64 \(the dtype of x\), got float32")
def _(be): L.affine_forward(A(be, 2, 4), A(be, 4, 3, dtype="float32"), A(be, 3))


@row("affine.empty_batch")
def _(be):
    out, cache = L.affine_forward(A(be, 0, 4), A(be, 4, 3), A(be, 3))
    assert tuple(out.shape) == (0, 3)
    dx, dw, db = L.affine_backward(A(be, 0, 3), cache)
    assert tuple(dx.shape) == (0, 4) and float(be.xp.sum(dw * dw)) == 0.0


@row("affine.nan_propagates")
def _(be):
    x = np.ones((2, 4))
    x[1, 2] = np.nan
    out, _ = L.affine_forward(be.asarray(x), A(be, 4, 3), A(be, 3))
    o = to_np(out)
    assert np.isfinite(o[0]).all() and np.isnan(o[1]).all()


@row("affine.transposed_input")
def _(be):
    x = A(be, 4, 5)
    xt = be.xp.matrix_transpose(x)  # a non-contiguous view (5, 4)
    w, b = A(be, 4, 3, seed=1), A(be, 3, seed=2)
    out, _ = L.affine_forward(xt, w, b)
    expected = to_np(x).T @ to_np(w) + to_np(b)
    np.testing.assert_allclose(to_np(out), expected, rtol=1e-12)


@row("affine.strided_input")
def _(be):
    x = A(be, 6, 8)
    xs = x[::2, 1::2]  # non-contiguous slice
    out, _ = L.affine_forward(xs, A(be, 4, 3, seed=1), A(be, 3, seed=2))
    np.testing.assert_allclose(to_np(out), to_np(x)[::2, 1::2] @ to_np(A(be, 4, 3, seed=1)) + to_np(A(be, 3, seed=2)),
                               rtol=1e-12)


@row("relu.x_int", TypeError, r"x: expected a float32 or float64 array, got dtype int64")
def _(be): L.relu_forward(raw(be, np.ones(3, dtype=np.int64)))


@row("relu.nan_propagates")
def _(be):
    out, _ = L.relu_forward(be.asarray(np.array([np.nan, -1.0, 2.0])))
    o = to_np(out)
    assert np.isnan(o[0]) and o[1] == 0.0 and o[2] == 2.0


@row("affine.x_rank", ValueError, r"x: expected at least 2 dimensions \(N, d1, \.\.\.\), got shape \(5,\)")
def _(be): L.affine_forward(A(be, 5), A(be, 1, 3), A(be, 3))


def _affine_cache(be):
    return L.affine_forward(A(be, 4, 5), A(be, 5, 3, seed=1), A(be, 3, seed=2))[1]


@row("affine.dout_shape", ValueError,
     r"affine_backward: dout: expected shape \(4, 3\) \(the forward's output\), got \(4, 7\)")
def _(be): L.affine_backward(A(be, 4, 7), _affine_cache(be))


@row("affine.dout_broadcastable", ValueError,
     r"affine_backward: dout: expected shape \(4, 3\) \(the forward's output\), got \(1, 3\)")
def _(be): L.affine_backward(A(be, 1, 3), _affine_cache(be))


@row("affine.dout_dtype", TypeError,
     r"affine_backward: dout: expected dtype float64 \(the forward's dtype\), got float32")
def _(be): L.affine_backward(A(be, 4, 3, dtype="float32"), _affine_cache(be))


@row("affine.cache_none", TypeError, r"affine_backward: cache must be what affine_forward returned, got NoneType")
def _(be): L.affine_backward(A(be, 4, 3), None)


def _relu_cache(be):
    return L.relu_forward(A(be, 4, 5))[1]


@row("relu.dout_1d", ValueError, r"relu_backward: dout: expected shape \(4, 5\) \(the forward's output\), got \(5,\)")
def _(be): L.relu_backward(A(be, 5), _relu_cache(be))


@row("relu.dout_broadcastable", ValueError,
     r"relu_backward: dout: expected shape \(4, 5\) \(the forward's output\), got \(1, 5\)")
def _(be): L.relu_backward(A(be, 1, 5), _relu_cache(be))


@row("relu.dout_dtype", TypeError, r"relu_backward: dout: expected dtype float64 \(the forward's dtype\), got float32")
def _(be): L.relu_backward(A(be, 4, 5, dtype="float32"), _relu_cache(be))


@row("relu.cache_array", TypeError, r"relu_backward: cache must be what relu_forward returned, got \w+")
def _(be): L.relu_backward(A(be, 4, 5), A(be, 4, 5))  # an array, not the forward's ReluCache


@row("relu.dout_list", TypeError, r"relu_backward: dout: expected an array, got list")
def _(be): L.relu_backward([[1.0] * 5] * 4, _relu_cache(be))


# ---------------------------------------------------------------- losses
@row("loss.labels_out_of_range", ValueError, r"y: labels must lie in \[0, 3\), got values in \[0, 5\]")
def _(be): L.softmax_loss(A(be, 3, 3), I(be, [0, 5, 1]))


@row("loss.labels_negative", ValueError, r"y: labels must lie in \[0, 3\), got values in \[-2, 1\]")
def _(be): L.svm_loss(A(be, 3, 3), I(be, [0, -2, 1]))


@row("loss.labels_float", TypeError, r"y: expected integer labels, got dtype float64")
def _(be): L.softmax_loss(A(be, 3, 3), A(be, 3))


@row("loss.labels_bool", TypeError, r"y: expected integer labels, got dtype bool")
def _(be): L.softmax_loss(A(be, 3, 3), raw(be, np.array([True, False, True])))


@row("loss.labels_shape", ValueError, r"y: expected shape \(3,\) to match the batch, got \(3, 1\)")
def _(be): L.softmax_loss(A(be, 3, 3), I(be, [[0], [1], [2]]))


@row("loss.scores_rank", ValueError, r"x: expected a 2-d array, got shape \(3,\)")
def _(be): L.softmax_loss(A(be, 3), I(be, [0, 1, 2]))


@row("loss.empty_batch", ValueError, r"x: expected a non-empty batch \(N >= 1\)")
def _(be): L.softmax_loss(A(be, 0, 3), I(be, np.zeros(0, dtype=np.int64)))


@row("loss.nan_scores")
def _(be):
    loss, dx = L.softmax_loss(be.asarray(np.array([[np.nan, 0.0], [1.0, 0.0]])), I(be, [0, 1]))
    assert math.isnan(loss)  # NaN in, NaN out: the Solver's divergence check catches it


@row("loss.int32_labels_ok")
def _(be):
    y = be.xp.astype(I(be, [0, 1, 2]), be.xp.int32)
    loss, _ = L.softmax_loss(A(be, 3, 3), y)
    assert math.isfinite(loss)


# ---------------------------------------------------------------- normalisation
def _bn(be):
    return A(be, 4, 3), A(be, 3, seed=1), A(be, 3, seed=2)


def _param_snapshot(p):
    return lambda: {k: (to_np(v).tolist() if hasattr(v, "shape") else v) for k, v in p.items()}


@row("batchnorm.mode_missing", ValueError, r"bn_param\['mode'\]: expected 'train' or 'test', got None")
def _(be):
    p = {}
    L.batchnorm_forward(*_bn(be), p)


@row("batchnorm.gamma_shape", ValueError, r"gamma: expected shape \(3,\).*got \(4,\)")
def _(be):
    x, _, b = _bn(be)
    p = {"mode": "train", "running_mean": A(be, 3), "running_var": A(be, 3)}
    return (lambda: L.batchnorm_forward(x, A(be, 4), b, p)), _param_snapshot(p)


@row("batchnorm.eps_nonpositive", ValueError, r"eps: expected a value in \(0.0, inf\], got 0.0")
def _(be):
    p = {"mode": "train", "eps": 0.0, "running_mean": A(be, 3), "running_var": A(be, 3)}
    return (lambda: L.batchnorm_forward(*_bn(be), p)), _param_snapshot(p)


@row("batchnorm.momentum_range", ValueError, r"momentum: expected a value in \[0.0, 1.0\], got 1.5")
def _(be):
    p = {"mode": "train", "momentum": 1.5, "running_mean": A(be, 3), "running_var": A(be, 3)}
    return (lambda: L.batchnorm_forward(*_bn(be), p)), _param_snapshot(p)


@row("batchnorm.running_stats_shape", ValueError, r"bn_param\['running_mean'\]: expected shape \(3,\), got \(5,\)")
def _(be):
    p = {"mode": "train", "running_mean": A(be, 5), "running_var": A(be, 3)}
    return (lambda: L.batchnorm_forward(*_bn(be), p)), _param_snapshot(p)


@row("batchnorm.empty_batch_train", ValueError, r"x: batchnorm in train mode needs a non-empty batch")
def _(be):
    p = {"mode": "train"}
    return (lambda: L.batchnorm_forward(A(be, 0, 3), A(be, 3), A(be, 3), p)), _param_snapshot(p)


@row("batchnorm.single_sample")
def _(be):
    out, _ = L.batchnorm_forward(A(be, 1, 3), A(be, 3, seed=1), A(be, 3, seed=2), {"mode": "train"})
    # one sample: zero variance -> xhat = 0 and out = beta (finite, as in torch eval of a constant)
    np.testing.assert_allclose(to_np(out), to_np(A(be, 3, seed=2))[None, :], atol=1e-12)


@row("batchnorm.x_rank", ValueError, r"x: expected a 2-d array, got shape \(2, 3, 4\)")
def _(be): L.batchnorm_forward(A(be, 2, 3, 4), A(be, 3), A(be, 3), {"mode": "train"})


@row("layernorm.eps_negative", ValueError, r"eps: expected a value in \(0.0, inf\]")
def _(be): L.layernorm_forward(*_bn(be), {"eps": -1e-5})


@row("spatial_batchnorm.x_rank", ValueError, r"x: expected a 4-d array, got shape \(4, 3\)")
def _(be): L.spatial_batchnorm_forward(A(be, 4, 3), A(be, 3), A(be, 3), {"mode": "train"})


@row("groupnorm.G_not_dividing", ValueError, r"G: expected a positive integer dividing C=6, got 4")
def _(be): L.spatial_groupnorm_forward(A(be, 2, 6, 3, 3), A(be, 1, 6, 1, 1), A(be, 1, 6, 1, 1), 4, {})


@row("groupnorm.G_zero", ValueError, r"G: expected a positive integer dividing C=6, got 0")
def _(be): L.spatial_groupnorm_forward(A(be, 2, 6, 3, 3), A(be, 1, 6, 1, 1), A(be, 1, 6, 1, 1), 0, {})


@row("groupnorm.gamma_shape", ValueError, r"gamma: expected shape \(1, 6, 1, 1\).*got \(6,\)")
def _(be): L.spatial_groupnorm_forward(A(be, 2, 6, 3, 3), A(be, 6), A(be, 1, 6, 1, 1), 2, {})


@row("batchnorm.test_without_running_stats", ValueError,
     r"bn_param: expected 'running_mean' and 'running_var' in test mode, got neither: the running "
     r"statistics are missing \(run in train mode first, or pass running_mean/running_var\)")
def _(be):
    p = {"mode": "test"}
    return (lambda: L.batchnorm_forward(*_bn(be), p)), _param_snapshot(p)


@row("batchnorm.test_running_var_missing", ValueError,
     r"bn_param: expected 'running_mean' and 'running_var' in test mode, got only 'running_mean'")
def _(be):
    p = {"mode": "test", "running_mean": A(be, 3)}
    return (lambda: L.batchnorm_forward(*_bn(be), p)), _param_snapshot(p)


@row("batchnorm.running_mean_list", TypeError,
     r"bn_param\['running_mean'\]: expected an array of x's backend and device, got list")
def _(be):
    p = {"mode": "train", "running_mean": [0.0] * 3, "running_var": A(be, 3)}
    return (lambda: L.batchnorm_forward(*_bn(be), p)), _param_snapshot(p)


@row("batchnorm.running_stats_dtype", TypeError,
     r"bn_param\['running_var'\]: expected dtype float64 \(the dtype of x\), got float32")
def _(be):
    p = {"mode": "test", "running_mean": A(be, 3), "running_var": A(be, 3, dtype="float32")}
    return (lambda: L.batchnorm_forward(*_bn(be), p)), _param_snapshot(p)


@row("batchnorm.momentum_bool", TypeError, r"momentum: expected a real number, got True")
def _(be):
    p = {"mode": "train", "momentum": True, "running_mean": A(be, 3), "running_var": A(be, 3)}
    return (lambda: L.batchnorm_forward(*_bn(be), p)), _param_snapshot(p)


@row("batchnorm.unknown_key", ValueError,
     r"bn_param: unknown key 'epsilon'; did you mean 'eps'\? \(accepted: 'mode', 'eps', 'momentum', "
     r"'running_mean', 'running_var'\)")
def _(be):
    p = {"mode": "train", "epsilon": 1e-3, "running_mean": A(be, 3), "running_var": A(be, 3)}
    return (lambda: L.batchnorm_forward(*_bn(be), p)), _param_snapshot(p)


@row("batchnorm.param_none", TypeError, r"bn_param: expected a dict with 'mode' \('train' or 'test'\), got None")
def _(be): L.batchnorm_forward(*_bn(be), None)


def _bn_cache(be):
    return L.batchnorm_forward(*_bn(be), {"mode": "train"})[1]


@row("batchnorm.dout_broadcastable", ValueError,
     r"batchnorm_backward: dout: expected shape \(4, 3\) \(the forward's output\), got \(1, 3\)")
def _(be): L.batchnorm_backward(A(be, 1, 3), _bn_cache(be))


@row("batchnorm.alt_dout_shape", ValueError,
     r"batchnorm_backward_alt: dout: expected shape \(4, 3\) \(the forward's output\), got \(3,\)")
def _(be): L.batchnorm_backward_alt(A(be, 3), _bn_cache(be))


@row("batchnorm.dout_dtype", TypeError,
     r"batchnorm_backward: dout: expected dtype float64 \(the forward's dtype\), got float32")
def _(be): L.batchnorm_backward(A(be, 4, 3, dtype="float32"), _bn_cache(be))


@row("batchnorm.cache_of_layernorm", TypeError,
     r"batchnorm_backward: cache must be what batchnorm_forward returned, got LayerNormCache")
def _(be): L.batchnorm_backward(A(be, 4, 3), L.layernorm_forward(*_bn(be), {})[1])


def _sbn(be):
    return A(be, 2, 3, 4, 4), A(be, 3, seed=1), A(be, 3, seed=2)


@row("spatial_batchnorm.test_without_running_stats", ValueError,
     r"bn_param: expected 'running_mean' and 'running_var' in test mode, got neither")
def _(be):
    p = {"mode": "test"}
    return (lambda: L.spatial_batchnorm_forward(*_sbn(be), p)), _param_snapshot(p)


@row("spatial_batchnorm.unknown_key", ValueError, r"bn_param: unknown key 'momentun'; did you mean 'momentum'\?")
def _(be): L.spatial_batchnorm_forward(*_sbn(be), {"mode": "train", "momentun": 0.5})


@row("spatial_batchnorm.dout_broadcastable", ValueError,
     r"spatial_batchnorm_backward: dout: expected shape \(2, 3, 4, 4\) \(the forward's output\), got \(1, 3, 1, 1\)")
def _(be):
    _, cache = L.spatial_batchnorm_forward(*_sbn(be), {"mode": "train"})
    L.spatial_batchnorm_backward(A(be, 1, 3, 1, 1), cache)


@row("layernorm.unknown_key", ValueError, r"ln_param: unknown key 'epsilon'; did you mean 'eps'\? \(accepted: 'eps', 'mode'\)")
def _(be): L.layernorm_forward(*_bn(be), {"epsilon": 1e-3})


@row("layernorm.mode_accepted")
def _(be):
    out, _ = L.layernorm_forward(*_bn(be), {"mode": "test"})  # a model's mode loop may set it: ignored
    ref, _ = L.layernorm_forward(*_bn(be), None)
    np.testing.assert_array_equal(to_np(out), to_np(ref))


@row("layernorm.dout_broadcastable", ValueError,
     r"layernorm_backward: dout: expected shape \(4, 3\) \(the forward's output\), got \(1, 3\)")
def _(be): L.layernorm_backward(A(be, 1, 3), L.layernorm_forward(*_bn(be), {})[1])


def _gn(be):
    return A(be, 2, 6, 3, 3), A(be, 1, 6, 1, 1, seed=1), A(be, 1, 6, 1, 1, seed=2)


@row("groupnorm.unknown_key", ValueError, r"gn_param: unknown key 'groups' \(accepted: 'eps', 'mode'\)")
def _(be): L.spatial_groupnorm_forward(*_gn(be), 2, {"groups": 3})


@row("groupnorm.dout_broadcastable", ValueError,
     r"spatial_groupnorm_backward: dout: expected shape \(2, 6, 3, 3\) \(the forward's output\), got \(6, 3, 3\)")
def _(be):
    _, cache = L.spatial_groupnorm_forward(*_gn(be), 2, {})
    L.spatial_groupnorm_backward(A(be, 6, 3, 3), cache)


# ---------------------------------------------------------------- dropout
@row("dropout.keep_zero", ValueError, r"p \(keep probability\): expected a value in \(0.0, 1.0\], got 0")
def _(be): L.dropout_forward(A(be, 3, 3), {"p": 0, "mode": "train"})


@row("dropout.keep_above_one", ValueError, r"p \(keep probability\): expected a value in \(0.0, 1.0\], got 1.2")
def _(be): L.dropout_forward(A(be, 3, 3), {"p": 1.2, "mode": "train"})


@row("dropout.keep_missing", TypeError, r"p \(keep probability\): expected a real number, got None")
def _(be): L.dropout_forward(A(be, 3, 3), {"mode": "train"})


@row("dropout.mode", ValueError, r"dropout_param\['mode'\]: expected 'train' or 'test', got 'eval'")
def _(be): L.dropout_forward(A(be, 3, 3), {"p": 0.5, "mode": "eval"})


@row("dropout.x_int", TypeError, r"x: expected a float32 or float64 array, got dtype int64")
def _(be): L.dropout_forward(raw(be, np.ones(3, dtype=np.int64)), {"p": 0.5, "mode": "train"})


@row("dropout.empty")
def _(be):
    out, _ = L.dropout_forward(A(be, 0, 5), {"p": 0.5, "mode": "train", "seed": 1})
    assert tuple(out.shape) == (0, 5)


@row("dropout.param_none", TypeError, r"dropout_param: expected a dict with 'p' and 'mode', got None")
def _(be): L.dropout_forward(A(be, 3, 3), None)


@row("dropout.keep_bool", TypeError, r"p \(keep probability\): expected a real number, got True")
def _(be): L.dropout_forward(A(be, 3, 3), {"p": True, "mode": "train"})


@row("dropout.unknown_key", ValueError,
     r"dropout_param: unknown key 'keep_prob' \(accepted: 'p', 'mode', 'seed'\)")
def _(be): L.dropout_forward(A(be, 3, 3), {"p": 0.5, "mode": "train", "keep_prob": 0.5})


@row("dropout.dout_1d", ValueError,
     r"dropout_backward: dout: expected shape \(4, 5\) \(the forward's output\), got \(5,\)")
def _(be):
    _, cache = L.dropout_forward(A(be, 4, 5), {"p": 0.5, "mode": "train", "seed": 0})
    L.dropout_backward(A(be, 5), cache)


@row("dropout.dout_shape_test_mode", ValueError,
     r"dropout_backward: dout: expected shape \(4, 5\) \(the forward's output\), got \(1, 5\)")
def _(be):
    _, cache = L.dropout_forward(A(be, 4, 5), {"p": 0.5, "mode": "test"})  # no mask: dx would be dout itself
    L.dropout_backward(A(be, 1, 5), cache)


# ---------------------------------------------------------------- conv / pool
def _conv(be, x=(2, 3, 6, 6), w=(4, 3, 3, 3)):
    return A(be, *x), A(be, *w, seed=1), A(be, w[0], seed=2)


@row("conv.channel_mismatch", ValueError, r"w: expected 3 input channels.*got w of shape \(4, 2, 3, 3\)")
def _(be): L.conv_forward(*_conv(be, w=(4, 2, 3, 3)), {"stride": 1, "pad": 1})


@row("conv.x_rank", ValueError, r"x: expected a 4-d array \(N, C, H, W\), got shape \(3, 6, 6\)")
def _(be): L.conv_forward(A(be, 3, 6, 6), A(be, 4, 3, 3, 3), A(be, 4), {"stride": 1, "pad": 0})


@row("conv.stride_zero", ValueError, r"conv_param\['stride'\]: expected an integer >= 1, got 0")
def _(be): L.conv_forward(*_conv(be), {"stride": 0, "pad": 1})


@row("conv.stride_negative", ValueError, r"conv_param\['stride'\]: expected an integer >= 1, got -2")
def _(be): L.conv_forward(*_conv(be), {"stride": -2, "pad": 1})


@row("conv.stride_float", TypeError, r"conv_param\['stride'\]: expected an integer >= 1, got 1.5")
def _(be): L.conv_forward(*_conv(be), {"stride": 1.5, "pad": 1})


@row("conv.pad_negative", ValueError, r"conv_param\['pad'\]: expected an integer >= 0, got -1")
def _(be): L.conv_forward(*_conv(be), {"stride": 1, "pad": -1})


@row("conv.kernel_too_large", ValueError, r"w: kernel 9x9 is larger than the padded input 8x8")
def _(be): L.conv_forward(*_conv(be, w=(4, 3, 9, 9)), {"stride": 1, "pad": 1})


@row("conv.b_shape", ValueError, r"b: expected shape \(4,\)")
def _(be):
    x, w, _ = _conv(be)
    L.conv_forward(x, w, A(be, 3), {"stride": 1, "pad": 1})


@row("conv.x_int", TypeError, r"x: expected a float32 or float64 array, got dtype int64")
def _(be):
    _, w, b = _conv(be)
    L.conv_forward(raw(be, np.ones((2, 3, 6, 6), dtype=np.int64)), w, b, {"stride": 1, "pad": 1})


@row("conv.dout_shape", ValueError, r"dout: expected shape \(2, 4, 6, 6\) \(the forward's output\)")
def _(be):
    _, cache = L.conv_forward(*_conv(be), {"stride": 1, "pad": 1})
    L.conv_backward(A(be, 2, 4, 5, 5), cache)


@row("conv.floor_output_size")
def _(be):
    out, _ = L.conv_forward(*_conv(be, x=(1, 3, 7, 7)), {"stride": 2, "pad": 0})
    assert tuple(out.shape) == (1, 4, 3, 3)  # 1 + (7 - 3) // 2, the last column is dropped (PyTorch's floor)


@row("conv.empty_batch")
def _(be):
    out, cache = L.conv_forward(*_conv(be, x=(0, 3, 6, 6)), {"stride": 1, "pad": 1})
    assert tuple(out.shape) == (0, 4, 6, 6)
    dx, dw, db = L.conv_backward(A(be, 0, 4, 6, 6), cache)
    assert tuple(dx.shape) == (0, 3, 6, 6) and float(be.xp.sum(dw * dw)) == 0.0


@row("conv.noncontiguous_input")
def _(be):
    x, w, b = _conv(be, x=(2, 3, 6, 8))
    xv = x[:, :, :, ::2]  # strided view (2, 3, 6, 4)
    out, _ = L.conv_forward(xv, w, b, {"stride": 1, "pad": 1})
    ref, _ = L.conv_forward(be.asarray(np.ascontiguousarray(to_np(x)[:, :, :, ::2])), w, b, {"stride": 1, "pad": 1})
    np.testing.assert_allclose(to_np(out), to_np(ref), rtol=1e-13, atol=1e-13)


@row("conv.unknown_key", ValueError,
     r"conv_param: unknown key 'dilation' \(accepted: 'stride', 'pad', 'max_col_bytes', 'grad_algorithm'\)")
def _(be): L.conv_forward(*_conv(be), {"stride": 1, "pad": 1, "dilation": 2})


@row("conv.dout_dtype", TypeError, r"dout: expected dtype float64 \(the dtype of x\), got float32")
def _(be):
    _, cache = L.conv_forward(*_conv(be), {"stride": 1, "pad": 1})
    L.conv_backward(A(be, 2, 4, 6, 6, dtype="float32"), cache)


@row("conv.cache_none", TypeError, r"conv_backward: cache must be what conv_forward returned, got NoneType")
def _(be): L.conv_backward(A(be, 2, 4, 6, 6), None)


POOL = {"pool_height": 2, "pool_width": 2, "stride": 2}


@row("pool.window_too_large", ValueError, r"pool_param: window 5x5 is larger than the input 4x4")
def _(be): L.max_pool_forward(A(be, 1, 2, 4, 4), {"pool_height": 5, "pool_width": 5, "stride": 1})


@row("pool.stride_zero", ValueError, r"pool_param\['stride'\]: expected an integer >= 1, got 0")
def _(be): L.max_pool_forward(A(be, 1, 2, 4, 4), dict(POOL, stride=0))


@row("pool.height_zero", ValueError, r"pool_param\['pool_height'\]: expected an integer >= 1, got 0")
def _(be): L.max_pool_forward(A(be, 1, 2, 4, 4), dict(POOL, pool_height=0))


@row("pool.missing_key", (ValueError, KeyError, TypeError), r"pool_param.*'pool_width'")
def _(be): L.max_pool_forward(A(be, 1, 2, 4, 4), {"pool_height": 2, "stride": 2})


@row("pool.x_rank", ValueError, r"x: expected a 4-d array \(N, C, H, W\), got shape \(2, 4, 4\)")
def _(be): L.max_pool_forward(A(be, 2, 4, 4), POOL)


@row("pool.nan_propagates")
def _(be):
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 0] = np.nan
    out, _ = L.max_pool_forward(be.asarray(x), POOL)
    o = to_np(out)
    assert np.isnan(o[0, 0, 0, 0]) and np.isfinite(o[0, 0, 1, 1])


@row("pool.non_tiling_floor")
def _(be):
    out, _ = L.max_pool_forward(A(be, 1, 1, 5, 5), POOL)
    assert tuple(out.shape) == (1, 1, 2, 2)  # the last row/column are not covered, as in PyTorch


@row("pool.unknown_key", ValueError,
     r"pool_param: unknown key 'pad' \(accepted: 'pool_height', 'pool_width', 'stride'\)")
def _(be): L.max_pool_forward(A(be, 1, 2, 4, 4), dict(POOL, pad=1))


@row("pool.dout_shape", ValueError, r"dout: expected shape \(1, 2, 2, 2\) \(the forward's output\), got \(2, 2, 2\)")
def _(be):
    _, cache = L.max_pool_forward(A(be, 1, 2, 4, 4), POOL)
    L.max_pool_backward(A(be, 2, 2, 2), cache)


@row("pool.cache_none", TypeError, r"max_pool_backward: cache must be what max_pool_forward returned, got NoneType")
def _(be): L.max_pool_backward(A(be, 1, 2, 2, 2), None)


@row("avg_pool.window_too_large", ValueError, r"pool_param: window 5x5 is larger than the input 4x4")
def _(be): L.avg_pool_forward(A(be, 1, 2, 4, 4), {"pool_height": 5, "pool_width": 5, "stride": 1})


@row("avg_pool.unknown_key", ValueError,
     r"pool_param: unknown key 'pad' \(accepted: 'pool_height', 'pool_width', 'stride'\)")
def _(be): L.avg_pool_forward(A(be, 1, 2, 4, 4), dict(POOL, pad=1))


@row("avg_pool.nan_propagates")
def _(be):
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 1, 1] = np.nan
    out, _ = L.avg_pool_forward(be.asarray(x), {"pool_height": 2, "pool_width": 2, "stride": 1})
    o = to_np(out)
    assert np.isnan(o[0, 0, :2, :2]).all() and np.isfinite(o[0, 0, 2, :]).all() and np.isfinite(o[0, 0, :, 2]).all()


@row("avg_pool.non_tiling_floor")
def _(be):
    out, cache = L.avg_pool_forward(A(be, 1, 1, 5, 5), POOL)
    assert tuple(out.shape) == (1, 1, 2, 2)  # as in PyTorch (ceil_mode=False)
    dx = to_np(L.avg_pool_backward(be.asarray(np.ones((1, 1, 2, 2))), cache))
    assert (dx[0, 0, :4, :4] == 0.25).all() and (dx[0, 0, 4, :] == 0).all() and (dx[0, 0, :, 4] == 0).all()


@row("avg_pool.empty_batch")
def _(be):
    out, cache = L.avg_pool_forward(A(be, 0, 2, 4, 4), POOL)
    assert tuple(out.shape) == (0, 2, 2, 2)
    assert tuple(L.avg_pool_backward(A(be, 0, 2, 2, 2), cache).shape) == (0, 2, 4, 4)


@row("avg_pool.dout_shape", ValueError,
     r"avg_pool_backward: dout: expected shape \(1, 2, 2, 2\) \(the forward's output\), got \(2, 2, 2\)")
def _(be):
    _, cache = L.avg_pool_forward(A(be, 1, 2, 4, 4), POOL)
    L.avg_pool_backward(A(be, 2, 2, 2), cache)


@row("avg_pool.dout_dtype", TypeError,
     r"avg_pool_backward: dout: expected dtype float64 \(the forward's dtype\), got float32")
def _(be):
    _, cache = L.avg_pool_forward(A(be, 1, 2, 4, 4), POOL)
    L.avg_pool_backward(A(be, 1, 2, 2, 2, dtype="float32"), cache)


@row("avg_pool.cache_none", TypeError,
     r"avg_pool_backward: cache must be what avg_pool_forward returned, got NoneType")
def _(be): L.avg_pool_backward(A(be, 1, 2, 2, 2), None)


# ---------------------------------------------------------------- layer_utils sandwiches
@row("sandwich.dout_broadcastable", ValueError,
     r"relu_backward: dout: expected shape \(4, 3\) \(the forward's output\), got \(3,\)")
def _(be):
    from portnn import layer_utils as lu
    _, cache = lu.affine_bn_relu_forward(A(be, 4, 5), A(be, 5, 3, seed=1), A(be, 3, seed=2), A(be, 3, seed=3),
                                         A(be, 3, seed=4), {"mode": "train"})
    lu.affine_bn_relu_backward(A(be, 3), cache)


@row("sandwich.cache_none", TypeError,
     r"affine_relu_backward: cache must be what affine_relu_forward returned, got NoneType")
def _(be):
    from portnn import layer_utils as lu
    lu.affine_relu_backward(A(be, 4, 3), None)


@row("sandwich.conv_pool_dout_shape", ValueError,
     r"relu_backward: dout: expected shape \(2, 4, 3, 3\) \(the forward's output\), got \(2, 4, 6, 6\)")
def _(be):
    from portnn import layer_utils as lu
    _, cache = lu.conv_relu_pool_forward(*_conv(be), {"stride": 1, "pad": 1}, POOL)
    lu.conv_relu_pool_backward(A(be, 2, 4, 6, 6), cache)  # the conv's output shape, not the pooled one


# ---------------------------------------------------------------- optimizers
def _opt(be):
    return A(be, 3, 2), A(be, 3, 2, seed=1)


def _config_snapshot(cfg):
    return lambda: {k: (to_np(v).tolist() if hasattr(v, "shape") else v) for k, v in cfg.items()}


@pytest.mark.parametrize("rule", ["sgd", "sgd_momentum", "rmsprop", "adam"])
def test_optimizer_rows_all_rules(backend, rule):
    """Each update rule refuses the same bad inputs and leaves its config alone."""
    fn = optim.get_update_rule(rule)
    w, dw = _opt(backend)
    cfg = {"learning_rate": 1e-2}
    fn(w, dw, cfg)  # create state
    snap = _config_snapshot(cfg)
    before = snap()
    with pytest.raises(ValueError, match=r"dw: expected shape \(3, 2\)"):
        fn(w, A(backend, 2, 3), cfg)
    with pytest.raises(ValueError, match=r"learning_rate"):
        fn(w, dw, dict(cfg, learning_rate=-1.0))
    with pytest.raises(ValueError, match=r"config: unknown key 'lr'; did you mean 'learning_rate'\?"):
        fn(w, dw, dict(cfg, lr=0.5))
    with pytest.raises(TypeError, match=r"config\['learning_rate'\]: expected a real number, got True"):
        fn(w, dw, dict(cfg, learning_rate=True))
    assert snap() == before


@row("optim.lr_negative", ValueError, r"config\['learning_rate'\]: expected a finite number >= 0, got -0.1")
def _(be):
    cfg = {"learning_rate": -0.1}
    return (lambda: optim.sgd(*_opt(be), cfg)), _config_snapshot(cfg)


@row("optim.lr_nan", ValueError, r"config\['learning_rate'\]: expected a finite number >= 0, got nan")
def _(be): optim.adam(*_opt(be), {"learning_rate": float("nan")})


@row("optim.momentum_range", ValueError, r"config\['momentum'\]: expected a value in \[0, 1\), got 1.0")
def _(be):
    w, dw = _opt(be)
    cfg = {}
    optim.sgd_momentum(w, dw, cfg)
    cfg["momentum"] = 1.0
    return (lambda: optim.sgd_momentum(w, dw, cfg)), _config_snapshot(cfg)


@row("optim.decay_rate_range", ValueError, r"config\['decay_rate'\]: expected a value in \[0, 1\)")
def _(be): optim.rmsprop(*_opt(be), {"decay_rate": -0.5})


@row("optim.beta1_range", ValueError, r"config\['beta1'\]: expected a value in \[0, 1\)")
def _(be): optim.adam(*_opt(be), {"beta1": 1.5})


@row("optim.epsilon_zero", ValueError, r"config\['epsilon'\]: expected a finite number > 0, got 0")
def _(be): optim.adam(*_opt(be), {"epsilon": 0})


@row("optim.dtype_mismatch", TypeError, r"dw: expected dtype float64 \(the dtype of w\), got float32")
def _(be): optim.sgd(A(be, 3, 2), A(be, 3, 2, dtype="float32"))


@row("optim.int_params", TypeError, r"w: expected a float32 or float64 array, got dtype int64")
def _(be): optim.sgd(raw(be, np.ones((2,), dtype=np.int64)), raw(be, np.ones((2,), dtype=np.int64)))


@row("optim.unknown_rule", ValueError, r"update_rule: unknown update rule 'adamw'; known rules: \['adam', 'rmsprop', 'sgd', 'sgd_momentum'\]")
def _(be): optim.get_update_rule("adamw")


@row("optim.unknown_key_lr", ValueError,
     r"config: unknown key 'lr'; did you mean 'learning_rate'\? \(accepted: 'learning_rate', 'beta1', 'beta2', "
     r"'epsilon', 'm', 'v', 't'\)")
def _(be):
    w, dw = _opt(be)
    cfg = {}
    optim.adam(w, dw, cfg)
    cfg["lr"] = 0.5
    return (lambda: optim.adam(w, dw, cfg)), _config_snapshot(cfg)


@row("optim.other_rules_key", ValueError, r"config: unknown key 'momentum' \(accepted: 'learning_rate'\)")
def _(be): optim.sgd(*_opt(be), {"learning_rate": 0.1, "momentum": 0.9})


@row("optim.lr_bool", TypeError, r"config\['learning_rate'\]: expected a real number, got True")
def _(be):
    cfg = {"learning_rate": True}
    return (lambda: optim.sgd(*_opt(be), cfg)), _config_snapshot(cfg)


# ---------------------------------------------------------------- mixed backends / devices
@row("mixed.two_devices", ValueError, r"arrays on different devices in one call")
def _(be):
    try:
        other = get_backend("array_api_strict:device1")
        here = get_backend("array_api_strict")
    except BackendError as e:
        pytest.skip(str(e))
    L.affine_forward(here.asarray(np.ones((2, 3))), other.asarray(np.ones((3, 2))), other.asarray(np.ones(2)))


@row("mixed.two_backends", TypeError, r"arrays of different backends in one call")
def _(be):
    other = "numpy" if be.name != "numpy" else ("torch" if "torch" in portnn.available_backends() else "array_api_strict")
    ob = get_backend(other)
    _, cache = L.relu_forward(ob.asarray(np.ones(3)))
    L.relu_backward(A(be, 3), cache)


@row("mixed.optimizer_state_other_device", (ValueError, TypeError), r"dw|config")
def _(be):
    other = "numpy" if be.name != "numpy" else "array_api_strict"
    ob = get_backend(other)
    w = A(be, 3)
    cfg = {"learning_rate": 0.1}
    return (lambda: optim.sgd(w, ob.asarray(np.ones(3)), cfg)), _config_snapshot(cfg)


# ---------------------------------------------------------------- models
def _fcn(be, **kw):
    return portnn.FullyConnectedNet([5], input_dim=4, num_classes=3, seed=0, backend=be, dtype="float64", **kw)


def _params_snapshot(model):
    return lambda: {k: to_np(v).tolist() for k, v in model.state_dict().items()}


@row("model.keep_ratio_zero", ValueError, r"dropout_keep_ratio: expected a value in \(0.0, 1.0\], got 0")
def _(be): _fcn(be, dropout_keep_ratio=0)


@row("model.reg_negative", ValueError, r"reg: expected a value in \[0.0, inf\], got -1")
def _(be): _fcn(be, reg=-1)


@row("model.weight_scale_nan", ValueError, r"weight_scale: expected a value in \[0.0, inf\], got nan")
def _(be): _fcn(be, weight_scale=float("nan"))


@row("model.hidden_dims_zero", ValueError, r"hidden_dims\[1\]: expected an integer >= 1, got 0")
def _(be): portnn.FullyConnectedNet([5, 0], backend=be)


@row("model.unknown_normalization", ValueError, r"normalization: expected one of \[None, 'batchnorm', 'layernorm'\], got 'groupnorm'")
def _(be): _fcn(be, normalization="groupnorm")


@row("model.dtype_int", ValueError, r"dtype: expected one of \('float32', 'float64'\).*got 'int32'")
def _(be): portnn.TwoLayerNet(dtype="int32", backend=be)


@row("model.unknown_backend", BackendError, r"backend: unknown backend 'tensorflow'.*available here")
def _(be): portnn.TwoLayerNet(backend="tensorflow")


@row("model.host_data_for_device_model", TypeError, r"X: expected an array of the '\w+' backend")
def _(be):
    if be.name == "numpy":
        pytest.skip("on the numpy backend host arrays ARE the backend's arrays")
    m = _fcn(be)
    return (lambda: m.loss(np.ones((2, 4)), np.zeros(2, dtype=np.int64))), _params_snapshot(m)


@row("model.wrong_dtype_X", TypeError, r"X: expected dtype float64 \(the model's dtype\), got float32")
def _(be): _fcn(be).loss(A(be, 2, 4, dtype="float32"))


@row("model.wrong_features", ValueError, r"X: expected shape \(N, 4\), got \(2, 5\)")
def _(be): _fcn(be).loss(A(be, 2, 5))


@row("model.labels_out_of_range", ValueError, r"y: labels must lie in \[0, 3\), got values in \[0, 3\]")
def _(be):
    m = _fcn(be, normalization="batchnorm")
    return (lambda: m.loss(A(be, 3, 4), I(be, [0, 1, 3]))), _params_snapshot(m)


@row("model.cnn_input_dim", ValueError, r"input_dim: expected \(C, H, W\), got \(3, 32\)")
def _(be): portnn.ThreeLayerConvNet(input_dim=(3, 32), backend=be)


@row("model.cnn_filter_too_large", ValueError, r"filter_size: 2 is too large for 2x2 inputs")
def _(be): portnn.ThreeLayerConvNet(input_dim=(1, 2, 2), filter_size=2, backend=be)


@row("model.load_state_wrong_shape", ValueError, r"state\['W1'\]: expected shape \(4, 5\), got \(5, 4\)")
def _(be):
    m = _fcn(be)
    state = {k: to_np(v) for k, v in m.state_dict().items()}
    state["W1"] = state["W1"].T.copy()
    return (lambda: m.load_state_dict(state)), _params_snapshot(m)


@row("model.empty_batch_scores")
def _(be):
    assert tuple(_fcn(be).loss(A(be, 0, 4)).shape) == (0, 3)


@row("model.hidden_dims_int", TypeError,
     r"hidden_dims: expected a sequence of layer sizes such as \[100, 100\], got 50")
def _(be): portnn.FullyConnectedNet(50, input_dim=64, backend=be)


@row("model.hidden_dims_str", TypeError,
     r"hidden_dims: expected a sequence of layer sizes such as \[100, 100\], got '100'")
def _(be): portnn.FullyConnectedNet("100", input_dim=64, backend=be)


@row("model.hidden_dims_float", TypeError, r"hidden_dims\[0\]: expected an integer >= 1, got 1.5")
def _(be): portnn.FullyConnectedNet([1.5], input_dim=64, backend=be)


_UNTRAINED = (r"FullyConnectedNet: batchnorm layer 1 has no running statistics yet: train the model "
              r"\(Solver.train or loss\(X, y\)\) before predicting")


@row("model.batchnorm_untrained_scores", ValueError, _UNTRAINED)
def _(be):
    m = _fcn(be, normalization="batchnorm")
    return (lambda: m.loss(A(be, 3, 4))), _params_snapshot(m)


@row("model.batchnorm_untrained_predict", ValueError, _UNTRAINED)
def _(be):
    m = _fcn(be, normalization="batchnorm")
    return (lambda: m.predict(np.ones((3, 4)))), _params_snapshot(m)


# ---------------------------------------------------------------- Sequential and portnn.blocks
def _seq(be, blocks, input_dim=(1, 6, 6), **kw):
    return portnn.Sequential(blocks if blocks is not None else [B.Affine(3)], input_dim=input_dim, seed=0,
                             dtype="float64", backend=be, **kw)


@row("sequential.conv_on_features", ValueError,
     r"block 0 \(Conv\(2, 3\)\) does not fit input shape \(6,\): expects images \(C, H, W\), got per-sample "
     r"shape \(6,\)")
def _(be): _seq(be, [B.Conv(2, 3), B.Affine(3)], input_dim=6)


@row("sequential.pool_larger_than_input", ValueError,
     r"block 1 \(MaxPool\(3\)\) does not fit input shape \(2, 2, 2\): the 3x3 window is larger than the input 2x2")
def _(be): _seq(be, [B.Conv(2, 3), B.MaxPool(3), B.Affine(3)], input_dim=(1, 2, 2))


@row("sequential.conv_filter_too_large", ValueError,
     r"block 0 \(Conv\(2, 9, pad=0\)\) does not fit input shape \(1, 6, 6\): the 9x9 filter is larger than the "
     r"padded input 6x6")
def _(be): _seq(be, [B.Conv(2, 9, pad=0), B.Affine(3)])


@row("sequential.groupnorm_groups_not_dividing", ValueError,
     r"block 1 \(GroupNorm\(2\)\) does not fit input shape \(3, 6, 6\): groups=2 does not divide the 3 channels")
def _(be): _seq(be, [B.Conv(3, 3), B.GroupNorm(2), B.Affine(3)])


@row("sequential.residual_shape_change", ValueError,
     r"block 1 \(Residual\(Conv\(3, 3\), ReLU\(\)\)\) does not fit input shape \(2, 6, 6\): its blocks map "
     r"\(2, 6, 6\) to \(3, 6, 6\): x \+ f\(x\) needs the same shape \(use Residual\(\.\.\., projection=True\)")
def _(be): _seq(be, [B.Conv(2, 3), B.Residual(B.Conv(3, 3), B.ReLU()), B.Affine(3)])


@row("sequential.nested_residual_names_path", ValueError,
     r"block 0\.1 \(Residual\(Affine\(4\)\)\) does not fit input shape \(3,\): its blocks map \(3,\) to \(4,\)")
def _(be): _seq(be, [B.Residual(B.Affine(3), B.Residual(B.Affine(4))), B.Affine(3)], input_dim=3)


@row("sequential.no_projection_possible", ValueError,
     r"block 0 \(Residual\(Flatten\(\), projection=True\)\) does not fit input shape \(1, 6, 6\): no 1x1 "
     r"projection maps \(1, 6, 6\) to \(36,\)")
def _(be): _seq(be, [B.Residual(B.Flatten(), projection=True), B.Affine(3)])


@row("sequential.not_ending_in_scores", ValueError,
     r"Sequential: the last block must give class scores \(num_classes,\), got per-sample shape \(2, 6, 6\); "
     r"end with Affine\(num_classes\)")
def _(be): _seq(be, [B.Conv(2, 3)])


@row("sequential.weight_init_name", ValueError, r"weight_init: expected 'he' or a positive number, got 'xavier'")
def _(be): _seq(be, None, weight_init="xavier")


@row("sequential.weight_init_zero", ValueError, r"weight_init: expected a value in \(0.0, inf\], got 0")
def _(be): _seq(be, None, weight_init=0)


@row("sequential.loss_unknown", ValueError, r"loss: expected one of \['softmax', 'svm'\], got 'mse'")
def _(be): _seq(be, None, loss="mse")


@row("sequential.blocks_empty", ValueError, r"blocks: expected at least one block")
def _(be): _seq(be, [])


@row("sequential.blocks_not_a_list", TypeError, r"blocks: expected a list of blocks, got Affine")
def _(be): _seq(be, B.Affine(3))


@row("sequential.block_not_a_block", TypeError,
     r"blocks\[1\]: expected a portnn block \(e\.g\. portnn\.blocks\.Conv\(32, 3\)\), got int")
def _(be): _seq(be, [B.Flatten(), 3])


@row("sequential.unknown_block_config", ValueError,
     r"blocks\[0\]: expected a block config \{'block': one of \['Affine', 'AvgPool', .*\], \.\.\.\}, got 'Dense'")
def _(be): _seq(be, [{"block": "Dense", "out_dim": 3}])


@row("sequential.block_config_bad_argument", ValueError,
     r"blocks\[0\]\.blocks\[0\] \(Affine\): unknown key 'out'; did you mean 'out_dim'\? \(accepted: 'out_dim'\)")
def _(be): _seq(be, [{"block": "Residual", "blocks": [{"block": "Affine", "out": 3}]}, {"block": "Affine", "out_dim": 3}],
                input_dim=3)


@row("sequential.residual_config_unknown_key", ValueError,
     r"blocks\[0\] \(Residual\): unknown key 'proj' \(accepted: 'projection', 'blocks'\)")
def _(be): _seq(be, [{"block": "Residual", "blocks": [{"block": "ReLU"}], "proj": True}, B.Affine(3)], input_dim=3)


@row("sequential.input_dim_rank", ValueError, r"input_dim: expected \(C, H, W\) or a feature count D, got \(1, 4\)")
def _(be): _seq(be, None, input_dim=(1, 4))


@row("sequential.wrong_image_shape", ValueError, r"X: expected shape \(N, 1, 6, 6\), got \(2, 1, 5, 5\)")
def _(be): _seq(be, [B.Conv(2, 3), B.Affine(3)]).loss(A(be, 2, 1, 5, 5))


def _seq_bn(be):
    return _seq(be, [B.Conv(2, 3), B.BatchNorm(), B.ReLU(), B.Affine(3)])


@row("sequential.load_state_buffer_shape", ValueError, r"1\.running_mean: expected shape \(2,\), got \(5,\)")
def _(be):
    m = _seq_bn(be)
    m.loss(A(be, 3, 1, 6, 6), I(be, [0, 1, 2]))  # running statistics exist now
    state = {k: to_np(v) for k, v in m.state_dict().items()}
    state["1.running_mean"] = np.zeros(5)
    state["0.W"] = state["0.W"] + 1.0  # a good param beside the bad buffer: must not be assigned
    return (lambda: m.load_state_dict(state)), _params_snapshot(m)


_SEQ_UNTRAINED = (r"Sequential: batchnorm block 1 has no running statistics yet: train the model "
                  r"\(Solver\.train or loss\(X, y\)\) before predicting")


@row("sequential.batchnorm_untrained_scores", ValueError, _SEQ_UNTRAINED)
def _(be):
    m = _seq_bn(be)
    return (lambda: m.loss(A(be, 3, 1, 6, 6))), _params_snapshot(m)


@row("sequential.batchnorm_untrained_predict", ValueError, _SEQ_UNTRAINED)
def _(be):
    m = _seq_bn(be)
    return (lambda: m.predict(np.ones((3, 1, 6, 6)))), _params_snapshot(m)


@row("blocks.conv_filters_zero", ValueError, r"Conv: num_filters: expected an integer >= 1, got 0")
def _(be): B.Conv(0, 3)


@row("blocks.conv_even_filter_same", ValueError,
     r"Conv: pad=None means 'same', which needs an odd filter_size at stride 1, got filter_size=4; give pad "
     r"explicitly")
def _(be): B.Conv(8, 4)


@row("blocks.conv_pad_negative", ValueError, r"Conv: pad: expected an integer >= 0, got -1")
def _(be): B.Conv(2, 3, pad=-1)


@row("blocks.affine_out_dim_float", TypeError, r"Affine: out_dim: expected an integer >= 1, got 2.5")
def _(be): B.Affine(2.5)


@row("blocks.dropout_keep_zero", ValueError, r"Dropout: keep_ratio: expected a value in \(0.0, 1.0\], got 0")
def _(be): B.Dropout(0)


@row("blocks.dropout_keep_above_one", ValueError, r"Dropout: keep_ratio: expected a value in \(0.0, 1.0\], got 1.5")
def _(be): B.Dropout(1.5)


@row("blocks.pool_stride_zero", ValueError, r"MaxPool: stride: expected an integer >= 1, got 0")
def _(be): B.MaxPool(2, stride=0)


@row("blocks.avg_pool_size_zero", ValueError, r"AvgPool: size: expected an integer >= 1, got 0")
def _(be): B.AvgPool(0)


@row("blocks.groupnorm_groups_zero", ValueError, r"GroupNorm: groups: expected an integer >= 1, got 0")
def _(be): B.GroupNorm(0)


@row("blocks.batchnorm_momentum", ValueError, r"BatchNorm: momentum: expected a value in \[0.0, 1.0\], got 2")
def _(be): B.BatchNorm(momentum=2)


@row("blocks.residual_empty", ValueError, r"Residual: expected at least one block")
def _(be): B.Residual()


@row("blocks.residual_projection_not_bool", TypeError, r"Residual: projection: expected True or False, got 1")
def _(be): B.Residual(B.ReLU(), projection=1)


# ---------------------------------------------------------------- solver
def _data(n=20):
    rng = np.random.default_rng(0)
    return {"X_train": rng.standard_normal((n, 4)), "y_train": rng.integers(0, 3, n),
            "X_val": rng.standard_normal((5, 4)), "y_val": rng.integers(0, 3, 5)}


@row("solver.unknown_rule", ValueError, r"update_rule: unknown update rule 'nesterov'")
def _(be): portnn.Solver(_fcn(be), _data(), update_rule="nesterov")


@row("solver.missing_data_key", ValueError, r"data: missing key 'y_val'")
def _(be): portnn.Solver(_fcn(be), {k: v for k, v in _data().items() if k != "y_val"})


@row("solver.labels_float", TypeError, r"data\['y_train'\]: expected integer labels, got dtype float64")
def _(be): portnn.Solver(_fcn(be), dict(_data(), y_train=np.zeros(20)))


@row("solver.labels_out_of_range", ValueError, r"data\['y_val'\]: labels must lie in \[0, 3\), got values in \[0, 7\]")
def _(be): portnn.Solver(_fcn(be), dict(_data(), y_val=np.array([0, 1, 7, 2, 0])))


@row("solver.rows_mismatch", ValueError, r"data\['y_train'\]: expected shape \(20,\) to match the images, got \(19,\)")
def _(be): portnn.Solver(_fcn(be), dict(_data(), y_train=np.zeros(19, dtype=np.int64)))


@row("solver.empty_train", ValueError, r"data\['X_train'\]: expected at least one training sample, got 0")
def _(be): portnn.Solver(_fcn(be), dict(_data(), X_train=np.zeros((0, 4)), y_train=np.zeros(0, dtype=np.int64)))


@row("solver.batch_size_zero", ValueError, r"batch_size: expected an integer >= 1, got 0")
def _(be): portnn.Solver(_fcn(be), _data(), batch_size=0)


@row("solver.lr_negative", ValueError, r"optim_config\['learning_rate'\]: expected a value in \[0.0, inf\], got -0.01")
def _(be): portnn.Solver(_fcn(be), _data(), optim_config={"learning_rate": -0.01})


@row("solver.lr_decay_negative", ValueError, r"lr_decay: expected a value in \[0.0, inf\], got -0.5")
def _(be): portnn.Solver(_fcn(be), _data(), lr_decay=-0.5)


@row("solver.batch_larger_than_data")
def _(be):
    s = portnn.Solver(_fcn(be), _data(), batch_size=1000, num_epochs=1, verbose=False, seed=0)
    s.train()  # one step per epoch on all 20 samples (a batch larger than the data is clamped)
    assert s.iteration == 1 and len(s.loss_history) == 1


@row("solver.unknown_optim_key", ValueError, r"unknown key 'lr'; did you mean 'learning_rate'\?")
def _(be):
    m = _fcn(be)
    s = portnn.Solver(m, _data(), update_rule="adam", optim_config={"lr": 0.5}, num_epochs=1, verbose=False,
                      seed=0)
    return s.train, _params_snapshot(m)  # refused before any parameter moves


# ---------------------------------------------------------------- data / io / backends
@row("data.digits_bad_split", ValueError, r"num_val")
def _(be):
    from portnn.data import load_digits
    load_digits(num_val=-1)


@row("data.cifar_missing_folder", FileNotFoundError, r"CIFAR-10")
def _(be):
    from portnn.data import load_cifar10
    load_cifar10("/nonexistent/cifar-10-batches-py")


@row("io.missing_file", FileNotFoundError, r"nope.npz")
def _(be): portnn.load("/nonexistent/nope.npz")


@row("io.save_wrong_object", TypeError, r"obj: expected a portnn model or Solver, got dict")
def _(be): portnn.save({}, "/tmp/never-written.npz")


@row("backend.unknown_device", BackendError, r"array_api_strict: unknown device 'device9'")
def _(be): get_backend("array_api_strict:device9")


@row("backend.asarray_other_backend", TypeError, r"got an array of another backend")
def _(be):
    other = get_backend("array_api_strict" if be.name != "array_api_strict" else "torch")
    be.asarray(other.asarray(np.ones(2)))


# ---------------------------------------------------------------- the tests
@pytest.mark.parametrize("rid", sorted(ROWS))
def test_matrix_row(backend, rid):
    fn, exc, match = ROWS[rid]
    if exc is None:
        assert fn(backend) is None
        return
    stateful = None
    with pytest.raises(exc, match=match):
        result = fn(backend)
        if result is not None:
            call, snapshot = result
            stateful = (snapshot, snapshot())
            call()
    if stateful is not None:
        snapshot, before = stateful
        assert snapshot() == before, "the failing call changed state"


def test_docs_list_every_row():
    doc = (pathlib.Path(__file__).parent.parent / "docs" / "errors.md").read_text()
    listed = set(re.findall(r"^\| `([A-Za-z_0-9]+\.[A-Za-z_0-9]+)` \|", doc, re.M))
    assert listed >= set(ROWS), sorted(set(ROWS) - listed)
    assert not (listed - set(ROWS)), sorted(listed - set(ROWS))
