"""The layer harness must be able to fail: each check catches its own kind of bug."""

import numpy as np
import pytest

from portnn.backends import get_backend, namespace
from tests.layer_harness import DTYPES, check_layer


def scale_layer(factor=2.0, grad_factor=None, shift=0.0):
    """out = factor * x * w + shift; its backward, optionally wrong by grad_factor."""
    def forward(x, w):
        return factor * x * w + shift, (x, w)

    def backward(dout, cache):
        x, w = cache
        gf = factor if grad_factor is None else grad_factor
        return gf * dout * w, namespace(x).sum(gf * dout * x, axis=0)

    return dict(inputs=lambda rng: (rng.standard_normal((3, 4)), rng.standard_normal(4)),
                forward=forward, backward=backward, reference=lambda x, w: 2.0 * x * w)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_correct_layer_passes(backend, dtype):
    run = check_layer(backend, dtype, **scale_layer())
    assert len(run.grads) == 2 and run.out.dtype == backend.dtype(dtype)


@pytest.mark.parametrize("numerical_on", [None, "numpy"])
def test_a_wrong_backward_fails_the_gradient_check(backend, numerical_on):
    with pytest.raises(AssertionError, match=r"\[gradient\] input 0"):
        check_layer(backend, "float64", numerical_on=numerical_on, **scale_layer(grad_factor=2.0 * 1.01))


def test_a_wrong_forward_fails_the_reference_check(backend):
    for dtype in DTYPES:
        with pytest.raises(AssertionError, match=r"\[reference\]"):
            check_layer(backend, dtype, **scale_layer(factor=2.0 * 1.001))
    with pytest.raises(AssertionError, match=r"\[reference\]"):  # an offset of 1e-9 is seen in float64
        check_layer(backend, "float64", **scale_layer(shift=1e-9))


def test_a_changed_dtype_fails(backend):
    case = scale_layer()
    case["forward"] = lambda x, w: (namespace(x).astype(2.0 * x * w, namespace(x).float64), (x, w))
    with pytest.raises(AssertionError, match=r"\[dtype\] output dtype"):
        check_layer(backend, "float32", **case)


def test_a_wrong_gradient_count_or_shape_fails(backend):
    case = scale_layer()
    backward = case["backward"]
    case["backward"] = lambda dout, cache: backward(dout, cache)[0]
    with pytest.raises(AssertionError, match="backward returned 1 gradients, expected 2"):
        check_layer(backend, "float64", **case)
    case["backward"] = lambda dout, cache: (backward(dout, cache)[0], backward(dout, cache)[0])
    with pytest.raises(AssertionError, match=r"gradient 1 has shape \(3, 4\), expected \(4,\)"):
        check_layer(backend, "float64", **case)


def test_a_result_off_the_backend_fails(backend):
    if backend.name == "numpy":
        pytest.skip("NumPy results are this backend's own arrays")
    case = scale_layer()
    forward = case["forward"]
    case["forward"] = lambda x, w: (backend.to_numpy(forward(x, w)[0]), (x, w))
    with pytest.raises(AssertionError, match="expected a"):
        check_layer(backend, "float64", **case)


def test_a_backend_specific_result_fails_parity(backend):
    if backend.name == "numpy":
        pytest.skip("parity is against numpy")
    case = scale_layer()
    forward = case["forward"]
    case["forward"] = lambda x, w: forward(x, w * (1.0 if isinstance(x, np.ndarray) else 1.001))
    case["reference"] = None
    with pytest.raises(AssertionError, match=r"\[parity\] vs numpy: output"):
        check_layer(backend, "float64", **case)


def test_inputs_really_are_non_contiguous_and_a_stride_bug_fails():
    numpy = get_backend("numpy")
    seen = []
    case = scale_layer()
    forward = case["forward"]

    def spy(x, w):
        seen.append((x.flags.c_contiguous, w.flags.c_contiguous))
        return forward(x, w)

    check_layer(numpy, "float64", **dict(case, forward=spy))
    assert (False, False) in seen and (True, True) in seen

    def stride_bug(x, w):  # reads the underlying buffer as if x were contiguous
        flat = np.lib.stride_tricks.as_strided(x, shape=x.shape, strides=(x.shape[1] * x.itemsize, x.itemsize))
        return forward(flat, w)

    with pytest.raises(AssertionError, match=r"\[non-contiguous\]"):
        check_layer(numpy, "float64", **dict(case, forward=stride_bug, reference=None))
    assert len(seen) > 2 * 3 * 4  # the gradient check calls the spy too: it was not skipped


def test_scalar_outputs_and_integer_inputs(backend):
    """A loss-shaped layer: (x, labels) -> Python float; labels are not differentiated."""
    def forward(x, y):
        xp = namespace(x)  # the harness also runs the layer on numpy
        picked = xp.take_along_axis(x, y[:, None], axis=1)
        return float(xp.sum(picked * picked)), (x, y)

    def backward(dout, cache):
        x, y = cache
        xp = namespace(x)
        mask = xp.astype(xp.arange(x.shape[1], device=x.device)[None, :] == y[:, None], x.dtype)
        return dout * 2.0 * x * mask

    ref = lambda x, y: float(np.sum(x[np.arange(len(y)), y] ** 2))  # noqa: E731
    inputs = lambda rng: (rng.standard_normal((4, 3)), rng.integers(0, 3, 4))  # noqa: E731
    check_layer(backend, "float64", inputs=inputs, forward=forward, backward=backward, reference=ref)
    with pytest.raises(AssertionError, match=r"\[gradient\]"):
        check_layer(backend, "float64", inputs=inputs, forward=forward, reference=ref,
                    backward=lambda d, c: 1.01 * backward(d, c))


def test_a_layer_that_writes_into_its_input_fails_on_read_only_numpy():
    layer = scale_layer()
    clean_forward = layer["forward"]

    def writing_forward(x, w):
        out, cache = clean_forward(x, w)
        x[0, 0] = 0.0  # the bug: a layer writing into its caller's array
        return out, cache

    layer["forward"] = writing_forward
    with pytest.raises(ValueError, match="read-only"):
        check_layer(get_backend("numpy"), "float64", noncontiguous=False, **layer)
