"""The one validation vocabulary (portnn._checks): NumPy scalars are accepted
wherever Python numbers are, bool is never a number, and every public entry point
uses the same rules."""

import numpy as np
import pytest

import portnn.layers as L
from portnn import Solver
from portnn._checks import check_float_in, check_int, dtype_str, float_dtype_name, to_host
from portnn.data import load_digits
from portnn.models import FullyConnectedNet
from tests.helpers import to_np


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3)])
def test_int_accepts_python_and_numpy_integers(value):
    v = check_int(value, "n", minimum=1)
    assert v == 3 and type(v) is int


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 1.0, np.float64(1.0), "1", None, [1]])
def test_int_refuses_bool_float_str(value):
    with pytest.raises(TypeError, match=r"n: expected an integer >= 0, got "):
        check_int(value, "n", minimum=0)


def test_int_range_message():
    with pytest.raises(ValueError, match=r"stride: expected an integer >= 1, got 0"):
        check_int(np.int64(0), "stride", minimum=1)
    with pytest.raises(ValueError, match=r"k: expected an integer in \[0, 3\], got 4"):
        check_int(4, "k", minimum=0, maximum=3)


@pytest.mark.parametrize("value", [0.5, np.float32(0.5), np.float64(0.5), 1, np.int64(1)])
def test_float_accepts_python_and_numpy_numbers(value):
    v = check_float_in(value, "p", 0.0, 1.0)
    assert type(v) is float and v == float(value)


@pytest.mark.parametrize("value", [True, np.bool_(False), "0.5", None, np.ones(1)])
def test_float_refuses_bool_str_arrays(value):
    with pytest.raises(TypeError, match=r"p: expected a real number"):
        check_float_in(value, "p", 0.0, 1.0)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.1, 1.5])
def test_float_range(value):
    with pytest.raises(ValueError, match=r"p: expected a value in \[0.0, 1.0\]"):
        check_float_in(value, "p", 0.0, 1.0)


def test_dtype_names(backend):
    xp = backend.xp
    assert dtype_str(xp.float32) == "float32" and dtype_str(xp.int64) == "int64"
    assert dtype_str(np.dtype("float64")) == "float64" and dtype_str(np.float32) == "float32"
    assert float_dtype_name(xp.float64) == "float64"
    with pytest.raises(ValueError, match="dtype: expected one of"):
        float_dtype_name(xp.int64)


def test_to_host(backend):
    x = backend.asarray(np.arange(6.0).reshape(2, 3))
    h = to_host(x, "x")
    assert isinstance(h, np.ndarray) and h.tolist() == [[0, 1, 2], [3, 4, 5]]
    c = to_host(x, "x", copy=True)
    c[0, 0] = 99.0
    assert to_np(x)[0, 0] == 0.0  # the copy owns its data


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return {k: v[:100] for k, v in d.items()}


def test_solver_takes_numpy_integers(digits):
    model = FullyConnectedNet([8], input_dim=64, seed=0)
    s = Solver(model, digits, batch_size=np.int64(50), num_epochs=np.int32(1), print_every=np.int64(5),
               verbose=False, seed=0)
    assert s.batch_size == 50 and type(s.batch_size) is int
    s.train()
    assert len(s.loss_history) == 2


def test_solver_refuses_bool_batch_size(digits):
    model = FullyConnectedNet([8], input_dim=64, seed=0)
    with pytest.raises(TypeError, match=r"batch_size: expected an integer >= 1, got True"):
        Solver(model, digits, batch_size=True)


def test_conv_takes_numpy_integers(backend):
    rng = np.random.default_rng(0)
    x = backend.asarray(rng.standard_normal((2, 3, 5, 5)))
    w = backend.asarray(rng.standard_normal((4, 3, 3, 3)))
    b = backend.asarray(rng.standard_normal(4))
    out, _ = L.conv_forward(x, w, b, {"stride": np.int64(1), "pad": np.int64(1)})
    ref, _ = L.conv_forward(x, w, b, {"stride": 1, "pad": 1})
    assert np.array_equal(to_np(out), to_np(ref))
    with pytest.raises(TypeError, match=r"conv_param\['stride'\]: expected an integer >= 1, got True"):
        L.conv_forward(x, w, b, {"stride": True, "pad": 1})
    out, _ = L.max_pool_forward(x, {"pool_height": np.int64(2), "pool_width": np.int32(2), "stride": np.int64(2)})
    assert tuple(out.shape) == (2, 3, 2, 2)


def test_check_keys_names_the_key_and_suggests():
    from portnn._checks import check_keys

    check_keys({"stride": 1, "pad": 0}, "conv_param", ("stride", "pad"))
    with pytest.raises(ValueError, match=r"optim_config: unknown key 'lr'; did you mean 'learning_rate'\?"):
        check_keys({"lr": 0.5}, "optim_config", ("learning_rate", "momentum"))
    with pytest.raises(ValueError, match=r"conv_param: unknown key 'dilation' \(accepted: 'stride', 'pad'\)"):
        check_keys({"stride": 1, "dilation": 2}, "conv_param", ("stride", "pad"))


def test_check_finite_host_counts_and_names_rows():
    from portnn._checks import check_finite_host

    check_finite_host(np.ones((3, 2)), "X")
    check_finite_host(np.arange(3), "y")  # integers are always finite
    with pytest.raises(ValueError, match=r"X_val: holds 2 non-finite values \(NaN or inf\) of 6"):
        check_finite_host(np.array([[1.0, np.nan], [2.0, 3.0], [np.inf, 0.0]]), "X_val")
    with pytest.raises(ValueError, match=r"X: 2 of 3 rows hold NaN or inf \(rows 0, 2\)"):
        check_finite_host(np.array([[1.0, np.nan], [2.0, 3.0], [np.inf, 0.0]]), "X", rows=True)
