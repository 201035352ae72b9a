"""Regression tests for what an adversarial run found doing something silently wrong
or failing late (the "No silent failures" issue). Each test names its point."""

import numpy as np
import pytest

import portnn
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
