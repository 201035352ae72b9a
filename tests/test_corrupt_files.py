"""Damaged, mismatched and hostile checkpoint files fail with a clear error and
change nothing in the model they were meant for."""

import os
import pickle

import numpy as np
import pytest

import portnn
from portnn.io import load_into
from tests.checkpoint_helpers import drop_manifest, rewrite_manifest


@pytest.fixture
def saved(tmp_path):
    model = portnn.FullyConnectedNet([8], input_dim=6, num_classes=3, normalization="batchnorm", seed=1)
    path = str(tmp_path / "m.npz")
    portnn.save(model, path)
    return model, path


@pytest.fixture
def target():
    """A model of the same architecture, different values: must stay untouched."""
    m = portnn.FullyConnectedNet([8], input_dim=6, num_classes=3, normalization="batchnorm", seed=2)
    return m, {k: np.array(v) for k, v in m.params.items()}


def assert_untouched(target):
    model, before = target
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, before[k])


def test_good_file_loads_into(saved, target):
    load_into(target[0], saved[1])
    np.testing.assert_array_equal(target[0].params["W1"], saved[0].params["W1"])


def test_truncated(saved, target):
    _, path = saved
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    for load in (lambda: portnn.load(path), lambda: load_into(target[0], path)):
        with pytest.raises(ValueError, match=r"m.npz: damaged or not a portnn checkpoint"):
            load()
    assert_untouched(target)


def test_corrupted_bytes(saved, target):
    _, path = saved
    data = bytearray(open(path, "rb").read())
    i = data.index(b"\x93NUMPY") + 200  # inside the first array's payload
    data[i : i + 16] = b"\xff" * 16
    open(path, "wb").write(bytes(data))
    with pytest.raises(ValueError, match=r"m.npz: damaged"):
        load_into(target[0], path)
    assert_untouched(target)


def test_wrong_version(saved, target):
    _, path = saved
    rewrite_manifest(path, lambda m: dict(m, version=99))
    with pytest.raises(ValueError, match=r"format version 99, this portnn reads versions 1, 2, 3"):
        load_into(target[0], path)
    assert_untouched(target)


def test_not_a_manifest(saved, target):
    _, path = saved
    rewrite_manifest(path, raw=b"[1, 2")
    with pytest.raises(ValueError, match="not a valid portnn manifest"):
        portnn.load(path)
    rewrite_manifest(path, raw=b'{"format": "something else"}')
    with pytest.raises(ValueError, match="not a portnn checkpoint manifest"):
        load_into(target[0], path)
    assert_untouched(target)


def test_missing_manifest(saved):
    # The side .json is informational: without it the checkpoint still loads.
    os.remove(saved[1] + ".json")
    assert portnn.load(saved[1]) is not None
    # An .npz with no manifest inside and none beside it is not portnn's.
    drop_manifest(saved[1])
    with pytest.raises(ValueError, match=r"m.npz: not a portnn checkpoint \(no manifest inside it, and no .*m.npz.json\)"):
        portnn.load(saved[1])


def test_object_array_refused(saved, target):
    model, path = saved
    arrays = {f"model.{k}": np.asarray(v) for k, v in model.params.items()}
    arrays["model.W1"] = np.array([{"evil": 1}, None], dtype=object)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"refused to load .*(pickle|Object arrays)"):
        load_into(target[0], path)
    assert_untouched(target)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_refused_without_running(saved, target, tmp_path):
    _, path = saved
    marker = str(tmp_path / "pwned")
    with open(path, "wb") as f:
        pickle.dump(_Payload(marker), f)
    with pytest.raises(ValueError, match=r"m.npz: damaged or not a portnn checkpoint \(not an .npz archive\)"):
        load_into(target[0], path)
    assert not os.path.exists(marker)
    assert_untouched(target)


def test_arrays_not_matching_manifest(saved, target):
    model, path = saved
    other = portnn.FullyConnectedNet([5], input_dim=6, num_classes=3, seed=0)
    np.savez(path, **{f"model.{k}": np.asarray(v) for k, v in other.params.items()})
    with pytest.raises(ValueError, match="do not match the manifest"):
        load_into(target[0], path)
    assert_untouched(target)


def test_other_architecture_refused(saved):
    other = portnn.FullyConnectedNet([9], input_dim=6, num_classes=3, normalization="batchnorm", seed=2)
    before = np.array(other.params["W1"])
    with pytest.raises(ValueError, match=r"holds a FullyConnectedNet with config .*'hidden_dims': \[8\]"):
        load_into(other, saved[1])
    np.testing.assert_array_equal(other.params["W1"], before)
