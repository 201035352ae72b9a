"""Inverted dropout: statistics, seeded masks identical across backends, gradients."""

import numpy as np
import pytest

from portnn.backends import get_backend
from portnn.layers import dropout_backward, dropout_forward
from tests.helpers import assert_on_backend, numeric_grad, put, rel_error, to_np


@pytest.mark.parametrize("p", [0.25, 0.5, 0.9])
def test_keep_ratio_and_scaling(backend, rng, p):
    x = rng.standard_normal((200, 100)) + 10
    out, _ = dropout_forward(put(backend, x), {"p": p, "mode": "train", "seed": 123})
    assert_on_backend(out, backend)
    o = to_np(out)
    kept = o != 0
    n = kept.size
    assert abs(kept.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(o[kept], x[kept] / p, rtol=1e-12)
    out_t, _ = dropout_forward(put(backend, x), {"p": p, "mode": "test"})
    np.testing.assert_array_equal(to_np(out_t), x)


def test_same_seed_same_mask_on_every_backend(backend, rng):
    x = rng.standard_normal((37, 11))
    param = {"p": 0.6, "mode": "train", "seed": 2**40 + 5}
    ref, _ = dropout_forward(get_backend("numpy").asarray(x), dict(param))
    out, _ = dropout_forward(put(backend, x), dict(param))
    np.testing.assert_array_equal(to_np(out), ref)
    other, _ = dropout_forward(put(backend, x), dict(param, seed=7))
    assert not np.array_equal(to_np(other), ref)


def test_unseeded_masks_differ(backend):
    x = put(backend, np.ones((50, 50)))
    a, _ = dropout_forward(x, {"p": 0.5, "mode": "train"})
    b, _ = dropout_forward(x, {"p": 0.5, "mode": "train"})
    assert not np.array_equal(to_np(a), to_np(b))


def test_dropout_gradient(backend, rng):
    x, dout = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
    param = {"p": 0.7, "mode": "train", "seed": 1}
    _, cache = dropout_forward(put(backend, x), param)
    dx = dropout_backward(put(backend, dout), cache)
    num = numeric_grad(lambda a: to_np(dropout_forward(put(backend, a), dict(param))[0]), x, dout)
    assert rel_error(to_np(dx), num) < 1e-7


def test_float32_kept(backend, rng):
    out, _ = dropout_forward(put(backend, rng.standard_normal((4, 4)), dtype="float32"),
                             {"p": 0.5, "mode": "train", "seed": 0})
    assert out.dtype == backend.dtype("float32")


@pytest.mark.parametrize("p", [0.0, -0.1, 1.5, float("nan"), None])
def test_bad_keep_probability(backend, p):
    with pytest.raises((ValueError, TypeError), match="p \\(keep probability\\)"):
        dropout_forward(put(backend, np.ones((2, 2))), {"p": p, "mode": "train"})


def test_bad_mode(backend):
    with pytest.raises(ValueError, match="mode"):
        dropout_forward(put(backend, np.ones((2, 2))), {"p": 0.5, "mode": "eval"})
