"""The backend registry, host<->device crossings and the compute-path import rule."""

import subprocess
import sys

import numpy as np
import pytest

import portnn
from portnn.backends import (
    BackendError,
    available_backends,
    backend_of,
    get_backend,
    namespace,
    set_backend,
    use_backend,
)
from tests.helpers import assert_on_backend


def test_roundtrip_keeps_values_dtype_and_device(backend):
    for dt in ("float32", "float64"):
        host = np.arange(12, dtype=dt).reshape(3, 4) / 7
        x = backend.asarray(host)
        assert_on_backend(x, backend)
        assert x.dtype == backend.dtype(dt)
        back = backend.to_numpy(x)
        assert isinstance(back, np.ndarray)
        np.testing.assert_array_equal(back, host)
    labels = backend.asarray(np.array([1, 2, 3], dtype=np.int32))
    assert labels.dtype == backend.xp.int64
    scalar = backend.asarray(np.array(2.5))
    assert scalar.shape == ()


def test_asarray_copies_host_data(backend):
    host = np.zeros(3)
    x = backend.asarray(host)
    host[0] = 1.0
    assert backend.to_numpy(x)[0] == 0.0


def test_backend_of_and_namespace(backend):
    x = backend.asarray(np.ones(2))
    assert backend_of(x) == backend
    assert namespace(x) is not None


def test_available_and_default():
    avail = available_backends()
    assert "numpy" in avail
    assert get_backend().name == "numpy"
    with use_backend("array_api_strict") as be:
        assert get_backend() is be
        m = portnn.TwoLayerNet(input_dim=3, hidden_dim=2, num_classes=2, seed=0)
        assert m.backend.name == "array_api_strict"
    assert get_backend().name == "numpy"
    set_backend("array_api_strict")
    try:
        assert get_backend().name == "array_api_strict"
    finally:
        set_backend(None)


def test_env_var_selects_default():
    code = "import portnn; print(portnn.get_backend().name)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PORTNN_BACKEND": "array_api_strict", "PATH": ""}, check=True)
    assert out.stdout.strip() == "array_api_strict"


def test_errors_say_why_and_list_available():
    with pytest.raises(BackendError, match=r"unknown backend 'mxnet'.*available here: \['numpy'"):
        get_backend("mxnet")
    if "cupy" not in available_backends():
        with pytest.raises(BackendError, match=r"cupy: (not installed|.*no (GPU|CUDA device)).*Available here"):
            get_backend("cupy")
    with pytest.raises(BackendError, match="numpy: only the 'cpu' device"):
        get_backend("numpy:gpu")
    with pytest.raises(ValueError, match="dtype: expected one of"):
        get_backend("numpy").dtype("float16")


def test_check_array_messages():
    be = get_backend("array_api_strict:device1")
    with pytest.raises(TypeError, match="X: expected an array of the 'array_api_strict' backend"):
        be.check_array(np.ones(2), "X")
    with pytest.raises(ValueError, match="X: expected an array on device"):
        be.check_array(get_backend("array_api_strict").asarray(np.ones(2)), "X")
