"""Inverted dropout: statistics, seeded masks identical across backends, and the layer
harness (numerical gradients with a fixed mask, parity, non-contiguous inputs, dtypes)."""

import numpy as np
import pytest

from portnn.backends import get_backend
from portnn.layers import dropout_backward, dropout_forward
from tests.helpers import assert_on_backend, assert_refuses_foreign_dout, put, to_np, tolerance
from tests.layer_harness import DTYPES, check_layer


@pytest.mark.parametrize("p", [0.25, 0.5, 0.9])
def test_keep_ratio_and_scaling(backend, rng, p):
    x = rng.standard_normal((200, 100)) + 10
    out, _ = dropout_forward(put(backend, x), {"p": p, "mode": "train", "seed": 123})
    assert_on_backend(out, backend)
    o = to_np(out)
    kept = o != 0
    n = kept.size
    assert abs(kept.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(o[kept], x[kept] / p, **tolerance("float64"))
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


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,param", [
    ((6, 5), {"p": 0.7, "mode": "train", "seed": 1}),
    ((4, 4), {"p": 0.5, "mode": "train", "seed": 0}),
    ((4, 4), {"p": 0.5, "mode": "test"}),   # identity: out is x, dx is dout
    ((3, 4), {"p": 1.0, "mode": "train"}),  # keeps everything: no mask
])
def test_dropout_layer(backend, dtype, shape, param):
    """A seeded mask is fixed: the numerical gradient sees the mask the backward uses,
    and numpy (parity) draws the same mask. No reference: the mask is checked above."""
    check_layer(backend, dtype, inputs=lambda rng: rng.standard_normal(shape),
                forward=lambda x: dropout_forward(x, dict(param)), backward=dropout_backward)


@pytest.mark.parametrize("p", [0.0, -0.1, 1.5, float("nan"), None])
def test_bad_keep_probability(backend, p):
    with pytest.raises((ValueError, TypeError), match="p \\(keep probability\\)"):
        dropout_forward(put(backend, np.ones((2, 2))), {"p": p, "mode": "train"})


def test_bad_mode(backend):
    with pytest.raises(ValueError, match="mode"):
        dropout_forward(put(backend, np.ones((2, 2))), {"p": 0.5, "mode": "eval"})


@pytest.mark.parametrize("mode, p", [("test", 0.5), ("train", 1.0)])
def test_maskless_backward_refuses_a_dout_of_another_backend_or_device(backend, mode, p):
    """Test mode (and p = 1) keep no mask, so the cache records where x lived: a dout
    from another backend or device is refused by name instead of passing through."""
    x = backend.asarray(np.ones((2, 3)), dtype="float64")
    _, cache = dropout_forward(x, {"p": p, "mode": mode})
    assert_refuses_foreign_dout(backend, dropout_backward, cache, (2, 3), "dropout_backward")
    assert dropout_backward(backend.asarray(np.ones((2, 3)), dtype="float64"), cache) is not None
