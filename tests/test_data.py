"""portnn.data: the bundled digits and the CIFAR-10 loader (host NumPy only, no backend).

CIFAR-10 cannot be downloaded here, so the loader is tested on tiny folders written in
the exact format of the "python version" batches: a pickled dict with b"batch_label",
b"labels" (list of ints), b"data" (uint8 (N, 3072)), b"filenames"; data_batch_1..5,
test_batch and batches.meta. They are written with pickle protocol 2 (as Python 3 writes
it), protocols 4 and 5, and as Python 2 cPickle wrote the real files.
"""

import builtins
import os
import pickle
import struct
from importlib import resources

import numpy as np
import pytest

from portnn.data import CIFAR10FormatError, UnsafePickleError, load_cifar10, load_digits
from portnn.data.digits import _raw

SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------- digits


def _rows(x):
    """Image rows as a set of bytes, for overlap checks (the 1,797 images are all distinct)."""
    return {r.tobytes() for r in np.ascontiguousarray(x).reshape(x.shape[0], -1)}


def test_digits_default_shapes_dtypes_and_sizes():
    d = load_digits()
    assert sorted(d) == sorted(f"{p}_{s}" for p in "Xy" for s in SPLITS)
    assert [d[f"X_{s}"].shape for s in SPLITS] == [(1197, 64), (300, 64), (300, 64)]
    for s in SPLITS:
        assert isinstance(d[f"X_{s}"], np.ndarray) and d[f"X_{s}"].dtype == np.float32
        assert d[f"X_{s}"].flags.c_contiguous
        assert d[f"y_{s}"].dtype == np.int64 and d[f"y_{s}"].shape == (d[f"X_{s}"].shape[0],)
        assert set(np.unique(d[f"y_{s}"])) == set(range(10))


@pytest.mark.parametrize("num_val,num_test", [(100, 50), (0, 0), (0, 1796), (1796, 0), (1, 1)])
def test_digits_split_sizes(num_val, num_test):
    d = load_digits(num_val=num_val, num_test=num_test)
    assert d["X_train"].shape[0] == 1797 - num_val - num_test
    assert d["X_val"].shape == (num_val, 64) and d["y_val"].shape == (num_val,)
    assert d["X_test"].shape == (num_test, 64) and d["y_test"].shape == (num_test,)


def test_digits_raw_values_and_partition():
    d = load_digits(normalize=False, dtype="float64")
    pixels, labels = _raw()
    for s in SPLITS:
        x = d[f"X_{s}"]
        assert x.min() >= 0 and x.max() <= 16 and np.array_equal(x, np.round(x))
    # the three splits partition the data set: no image twice, none left out, labels kept
    rows = [_rows(d[f"X_{s}"]) for s in SPLITS]
    assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])
    assert sum(len(r) for r in rows) == 1797
    assert rows[0] | rows[1] | rows[2] == _rows(pixels.astype(np.float64))
    label_of = {r.astype(np.float64).tobytes(): int(l) for r, l in zip(pixels, labels)}
    for s in SPLITS:
        assert [label_of[r.tobytes()] for r in d[f"X_{s}"]] == d[f"y_{s}"].tolist()


def test_digits_split_is_stratified():
    d = load_digits()
    _, labels = _raw()
    share = np.bincount(labels, minlength=10) / labels.size
    for s in SPLITS:
        y = d[f"y_{s}"]
        assert np.all(np.abs(np.bincount(y, minlength=10) - y.size * share) <= 2), s


def test_digits_normalization_as_documented():
    raw = load_digits(normalize=False, dtype="float64")
    d = load_digits(dtype="float64")
    mean = (raw["X_train"] / 16).mean(axis=0)
    for s in SPLITS:
        np.testing.assert_allclose(d[f"X_{s}"], raw[f"X_{s}"] / 16 - mean, rtol=0, atol=1e-12)
        assert np.array_equal(d[f"y_{s}"], raw[f"y_{s}"])
    np.testing.assert_allclose(d["X_train"].mean(axis=0), 0, atol=1e-12)
    assert d["X_train"].min() >= -1 and d["X_train"].max() <= 1
    d32 = load_digits()
    np.testing.assert_allclose(d32["X_train"], d["X_train"], rtol=0, atol=1e-6)


def test_digits_flatten_false_gives_nchw_images():
    flat = load_digits(normalize=False)
    img = load_digits(normalize=False, flatten=False)
    for s in SPLITS:
        assert img[f"X_{s}"].shape == (flat[f"X_{s}"].shape[0], 1, 8, 8)
        assert np.array_equal(img[f"X_{s}"].reshape(-1, 64), flat[f"X_{s}"])
        assert np.array_equal(img[f"y_{s}"], flat[f"y_{s}"])
    # row-major 8x8: pixel (r, c) is column 8 * r + c of the CSV
    pixels, _ = _raw()
    first = img["X_train"][0, 0]
    match = np.flatnonzero((pixels == first.reshape(64)).all(axis=1))
    assert match.size == 1 and np.array_equal(pixels[match[0]].reshape(8, 8), first)


def test_digits_deterministic_and_seeded():
    a, b = load_digits(seed=3), load_digits(seed=3)
    for k in a:
        assert np.array_equal(a[k], b[k])
    a["X_train"][:] = 99  # callers own their arrays: the next call is unaffected
    assert np.array_equal(load_digits(seed=3)["X_val"], b["X_val"])
    assert load_digits(seed=3)["X_train"].max() < 99
    c = load_digits(seed=4)
    assert not np.array_equal(_sorted_rows(c["X_test"]), _sorted_rows(b["X_test"]))


def _sorted_rows(x):
    return np.array(sorted(r.tobytes() for r in x))


def test_digits_matches_scikit_learn_copy():
    datasets = pytest.importorskip("sklearn.datasets")  # optional oracle, not a dependency
    ref = datasets.load_digits()
    pixels, labels = _raw()
    assert np.array_equal(pixels, ref.data.astype(np.uint8))
    assert np.array_equal(labels, ref.target)


def test_digits_data_file_and_attribution_are_packaged():
    here = resources.files("portnn.data")
    assert here.joinpath("digits.csv.gz").is_file()
    text = here.joinpath("DIGITS_LICENSE.txt").read_text()
    for needle in ("CC BY 4.0", "Alpaydin", "Kaynak", "1998", "UCI", "scikit-learn"):
        assert needle in text


@pytest.mark.parametrize(
    "kwargs,exc,needle",
    [
        (dict(num_val=-1), ValueError, "num_val"),
        (dict(num_val=2.5), TypeError, "num_val"),
        (dict(num_val="300"), TypeError, "num_val"),
        (dict(num_val=True), TypeError, "num_val"),
        (dict(num_test=-5), ValueError, "num_test"),
        (dict(num_val=1000, num_test=797), ValueError, "num_val + num_test: expected at most 1796"),
        (dict(seed=None), TypeError, "seed"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(dtype="int32"), ValueError, "dtype"),
        (dict(dtype="float16"), ValueError, "dtype"),
        (dict(dtype=None), ValueError, "dtype"),
        (dict(dtype="nonsense"), ValueError, "dtype"),
        (dict(flatten="yes"), TypeError, "flatten"),
        (dict(normalize=1), TypeError, "normalize"),
    ],
)
def test_digits_bad_arguments(kwargs, exc, needle):
    # Wrong kind (a float, a string, a bool for a count) is a TypeError, a wrong value a ValueError.
    with pytest.raises(exc, match="expected") as e:
        load_digits(**kwargs)
    assert needle in str(e.value)
    assert "got" in str(e.value)


def test_digits_accepts_numpy_scalars_and_dtypes():
    d = load_digits(num_val=np.int64(10), num_test=np.int32(10), seed=np.uint8(1), dtype=np.float64)
    assert d["X_val"].shape == (10, 64) and d["X_train"].dtype == np.float64


# --------------------------------------------------------------------------- CIFAR-10 files


class _Py2Pickler(pickle._Pickler):
    """Writes protocol 2 the way Python 2 cPickle wrote the real CIFAR-10 batches:
    every str/bytes as BINSTRING, NumPy globals under numpy.core.multiarray."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _binstring(self, raw, obj):
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    def save_bytes(self, obj):
        self._binstring(obj, obj)

    def save_str(self, obj):
        self._binstring(obj.encode("latin-1"), obj)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str

    def save_global(self, obj, name=None):
        name = name or obj.__qualname__
        module = pickle.whichmodule(obj, name).replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
        self.memoize(obj)


def _dump(obj, path, protocol):
    with open(path, "wb") as f:
        if protocol == "py2":
            _Py2Pickler(f, protocol=2).dump(obj)
        else:
            pickle.dump(obj, f, protocol=protocol)


LABEL_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def _write_cifar(folder, sizes=(4, 3, 4, 3, 4), n_test=5, protocol=2, seed=0):
    """Write a tiny CIFAR-10 folder; returns (train data, train labels, test data, test labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    specs = [(f"data_batch_{i}", f"training batch {i} of 5", n) for i, n in enumerate(sizes, 1)]
    specs.append(("test_batch", "testing batch 1 of 1", n_test))
    for name, batch_label, n in specs:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        batch = {
            b"batch_label": batch_label.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"img_{name}_{j:05d}.png".encode() for j in range(n)],
        }
        _dump(batch, folder / name, protocol)
        xs.append(data)
        ys.append(np.array(labels, dtype=np.int64))
    meta = {b"num_cases_per_batch": max(sizes), b"label_names": LABEL_NAMES, b"num_vis": 3072}
    _dump(meta, folder / "batches.meta", protocol)
    return np.concatenate(xs[:-1]), np.concatenate(ys[:-1]), xs[-1], ys[-1]


def _replace_batch(folder, name, batch, protocol=2):
    _dump(batch, folder / name, protocol)


def _batch(n=3, seed=1):
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [int(v) for v in rng.integers(0, 10, size=n)],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [f"x{j}.png".encode() for j in range(n)],
    }


SMALL = dict(num_training=12, num_validation=3, num_test=4)


@pytest.mark.parametrize("protocol", [2, "py2", 3, 4, 5, pickle.HIGHEST_PROTOCOL])
def test_cifar_reads_every_pickle_protocol(tmp_path, protocol):
    xtr, ytr, xte, yte = _write_cifar(tmp_path, protocol=protocol)
    d = load_cifar10(tmp_path, subtract_mean=False, **SMALL)
    assert d["X_train"].shape == (12, 3, 32, 32) and d["X_val"].shape == (3, 3, 32, 32)
    assert d["X_test"].shape == (4, 3, 32, 32)
    for s in SPLITS:
        assert d[f"X_{s}"].dtype == np.float32 and d[f"y_{s}"].dtype == np.int64
    # train: the first images, val: the LAST images of the train batches, test: first of test_batch
    assert np.array_equal(d["X_train"].reshape(12, -1), xtr[:12])
    assert np.array_equal(d["X_val"].reshape(3, -1), xtr[-3:])
    assert np.array_equal(d["X_test"].reshape(4, -1), xte[:4])
    assert np.array_equal(d["y_train"], ytr[:12])
    assert np.array_equal(d["y_val"], ytr[-3:])
    assert np.array_equal(d["y_test"], yte[:4])


def test_py2_writer_really_writes_python2_opcodes(tmp_path):
    """Guard for the test helper: the emulated Python 2 file uses GLOBAL numpy.core + BINSTRING."""
    import pickletools

    _write_cifar(tmp_path, protocol="py2")
    raw = (tmp_path / "data_batch_1").read_bytes()
    ops = {op.name for op, _, _ in pickletools.genops(raw)}
    assert {"GLOBAL", "BINSTRING", "SHORT_BINSTRING"} <= ops and "BINUNICODE" not in ops
    assert b"numpy.core.multiarray\n_reconstruct" in raw


def test_cifar_mean_subtraction_uses_train_mean(tmp_path):
    xtr, _, xte, _ = _write_cifar(tmp_path)
    d = load_cifar10(tmp_path, dtype="float64", **SMALL)
    mean = xtr[:12].astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(d["X_train"].reshape(12, -1), xtr[:12] - mean, atol=1e-12)
    np.testing.assert_allclose(d["X_val"].reshape(3, -1), xtr[-3:] - mean, atol=1e-12)
    np.testing.assert_allclose(d["X_test"].reshape(4, -1), xte[:4] - mean, atol=1e-12)
    np.testing.assert_allclose(d["X_train"].mean(axis=0), 0, atol=1e-12)
    d32 = load_cifar10(tmp_path, **SMALL)
    assert d32["X_train"].dtype == np.float32
    np.testing.assert_allclose(d32["X_val"], d["X_val"], atol=1e-4)


def test_cifar_channel_layouts(tmp_path):
    xtr, _, _, _ = _write_cifar(tmp_path)
    first = load_cifar10(tmp_path, subtract_mean=False, **SMALL)
    last = load_cifar10(tmp_path, subtract_mean=False, channels_first=False, **SMALL)
    assert last["X_train"].shape == (12, 32, 32, 3) and last["X_train"].flags.c_contiguous
    # CIFAR-10 rows: 1024 red values, then green, then blue, each a 32x32 image row-major
    img = xtr[5]
    assert first["X_train"][5, 1, 2, 7] == img[1024 + 2 * 32 + 7]
    assert last["X_train"][5, 2, 7, 1] == img[1024 + 2 * 32 + 7]
    assert np.array_equal(last["X_train"], first["X_train"].transpose(0, 2, 3, 1))


def test_cifar_split_sizes_and_limits(tmp_path):
    _write_cifar(tmp_path)  # 18 train images, 5 test images
    d = load_cifar10(tmp_path, num_training=15, num_validation=3, num_test=5)
    assert [d[f"y_{s}"].shape[0] for s in SPLITS] == [15, 3, 5]
    d = load_cifar10(tmp_path, num_training=0, num_validation=0, num_test=0, subtract_mean=False)
    assert d["X_train"].shape == (0, 3, 32, 32) and d["X_val"].shape == (0, 3, 32, 32)
    # val does not move when num_training changes
    a = load_cifar10(tmp_path, num_training=2, num_validation=4, num_test=1, subtract_mean=False)
    b = load_cifar10(tmp_path, num_training=9, num_validation=4, num_test=1, subtract_mean=False)
    assert np.array_equal(a["X_val"], b["X_val"])
    with pytest.raises(ValueError, match=r"num_training \+ num_validation: expected at most 18.*got 16 \+ 3"):
        load_cifar10(tmp_path, num_training=16, num_validation=3, num_test=1)
    with pytest.raises(ValueError, match="num_training \\+ num_validation"):
        load_cifar10(tmp_path)  # the defaults need the real 50,000 images
    with pytest.raises(ValueError, match="num_test: expected at most 5"):
        load_cifar10(tmp_path, num_training=1, num_validation=1, num_test=6)


def test_cifar_accepts_labels_array_fortran_data_and_str_keys(tmp_path):
    _write_cifar(tmp_path)
    b = _batch(n=4)
    data = np.asfortranarray(b[b"data"])
    batch = {"batch_label": "training batch 1 of 5", "labels": np.array(b[b"labels"], dtype=np.int32),
             "data": data, "filenames": ["a", "b", "c", "d"]}
    _replace_batch(tmp_path, "data_batch_1", batch, protocol=4)
    d = load_cifar10(tmp_path, num_training=4, num_validation=1, num_test=1, subtract_mean=False)
    assert np.array_equal(d["X_train"].reshape(4, -1), b[b"data"])
    assert np.array_equal(d["y_train"], b[b"labels"])


def test_cifar_batches_meta_is_written_in_real_format(tmp_path):
    _write_cifar(tmp_path)
    with open(tmp_path / "batches.meta", "rb") as f:
        meta = pickle.load(f)  # our own trusted test file
    assert meta[b"label_names"] == LABEL_NAMES and meta[b"num_vis"] == 3072


# --------------------------------------------------------------------------- hostile and damaged files


class _RunsCode:
    """A pickle that runs a callable on load (what a plain pickle.load would do)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _hostile_payloads(marker):
    return {
        "os.system": _RunsCode(os.system, f"touch {marker}"),
        "builtins.exec": _RunsCode(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "builtins.eval": _RunsCode(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        "numpy.save": _RunsCode(np.save, str(marker), np.zeros(1)),
    }


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("payload", ["os.system", "builtins.exec", "builtins.eval", "numpy.save"])
@pytest.mark.parametrize("where", ["whole_file", "inside_dict"])
def test_cifar_refuses_code_execution(tmp_path, payload, protocol, where):
    folder = tmp_path / "cifar"
    _write_cifar(folder)
    marker = tmp_path / "pwned"
    evil = _hostile_payloads(marker)[payload]
    batch = _batch()
    if where == "whole_file":
        obj = evil
    else:
        batch[b"data"] = evil
        obj = batch
    _replace_batch(folder, "data_batch_3", obj, protocol=protocol)
    with pytest.raises(UnsafePickleError) as e:
        load_cifar10(folder, **SMALL)
    assert isinstance(e.value, pickle.UnpicklingError) and isinstance(e.value, ValueError)
    msg = str(e.value)
    assert "data_batch_3" in msg and "refusing to load the global" in msg
    func = evil.func  # protocol 2 writes builtins as the Python 2 name __builtin__
    module = {"builtins": "__builtin__"}.get(func.__module__, func.__module__) if protocol == 2 else func.__module__
    assert f"global {module}.{func.__name__}:" in msg
    assert not marker.exists() and not (tmp_path / "pwned.npy").exists()


def test_cifar_refuses_object_arrays(tmp_path):
    _write_cifar(tmp_path)
    batch = _batch()
    batch[b"data"] = np.array([1, "x", None], dtype=object)
    _replace_batch(tmp_path, "data_batch_2", batch)
    with pytest.raises(CIFAR10FormatError, match="data_batch_2.*dtype 'O8' is not allowed"):
        load_cifar10(tmp_path, **SMALL)


def test_cifar_refuses_subclass_arrays(tmp_path):
    _write_cifar(tmp_path)
    batch = _batch()
    batch[b"data"] = np.ma.masked_array(batch[b"data"])
    _replace_batch(tmp_path, "data_batch_2", batch)
    with pytest.raises(UnsafePickleError, match="data_batch_2.*numpy.ma"):
        load_cifar10(tmp_path, **SMALL)


@pytest.mark.parametrize("protocol", [2, "py2", 5])
@pytest.mark.parametrize("keep", [0, 1, 40, 0.5, -1])
def test_cifar_truncated_batch(tmp_path, keep, protocol):
    _write_cifar(tmp_path, protocol=protocol)
    path = tmp_path / "data_batch_4"
    raw = path.read_bytes()
    n = int(len(raw) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(raw) + keep)
    path.write_bytes(raw[:n])
    with pytest.raises(CIFAR10FormatError, match="data_batch_4: is truncated") as e:
        load_cifar10(tmp_path, **SMALL)
    assert "cifar.html" in str(e.value)


def test_cifar_garbage_file(tmp_path):
    _write_cifar(tmp_path)
    (tmp_path / "test_batch").write_bytes(b"this is not a pickle at all\n" * 10)
    with pytest.raises(CIFAR10FormatError, match="test_batch: is damaged or not a CIFAR-10 batch"):
        load_cifar10(tmp_path, **SMALL)


def _without(batch, key):
    batch = dict(batch)
    del batch[key]
    return batch


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda b: [b[b"data"]], "expected a pickled dict, got list"),
        (lambda b: _without(b, b"labels"), "missing key(s) b'labels'"),
        (lambda b: _without(b, b"data"), "missing key(s) b'data'"),
        (lambda b: {**b, b"data": b[b"data"].astype(np.float32)}, "b'data': expected a uint8 array"),
        (lambda b: {**b, b"data": b[b"data"][:, :100]}, "shape (N, 3072), got uint8 array of shape (3, 100)"),
        (lambda b: {**b, b"data": b[b"data"].reshape(3, 3, 32, 32)}, "b'data': expected a uint8 array"),
        (lambda b: {**b, b"data": b"raw bytes"}, "b'data': expected a uint8 array"),
        (lambda b: {**b, b"labels": [0, 1, 10]}, "expected values in 0..9, got values in 0..10"),
        (lambda b: {**b, b"labels": [0, -1, 2]}, "expected values in 0..9"),
        (lambda b: {**b, b"labels": [0, 1]}, "b'labels' has 2 entries but b'data' has 3 images"),
        (lambda b: {**b, b"labels": [0, 1.5, 2]}, "b'labels': expected a list of ints"),
        (lambda b: {**b, b"labels": [True, False, True]}, "b'labels': expected a list of ints"),
        (lambda b: {**b, b"labels": b"abc"}, "b'labels': expected a list of ints"),
    ],
)
def test_cifar_wrong_contents(tmp_path, make, needle):
    _write_cifar(tmp_path)
    _replace_batch(tmp_path, "data_batch_5", make(_batch()))
    with pytest.raises(CIFAR10FormatError) as e:
        load_cifar10(tmp_path, **SMALL)
    msg = str(e.value)
    assert "data_batch_5" in msg and needle in msg, msg


def test_cifar_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_cifar10(tmp_path / "nowhere")
    msg = str(e.value)
    assert "does not exist" in msg and "data_batch_1" in msg and "test_batch" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in msg and "python" in msg
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_cifar10(tmp_path / "file")


@pytest.mark.parametrize("name", ["data_batch_1", "data_batch_5", "test_batch"])
def test_cifar_missing_file(tmp_path, name):
    _write_cifar(tmp_path)
    (tmp_path / name).unlink()
    with pytest.raises(FileNotFoundError, match=f"lacks {name}; expected data_batch_1.*cifar.html"):
        load_cifar10(tmp_path, **SMALL)


def test_cifar_points_at_the_extracted_subfolder(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py")
    with pytest.raises(FileNotFoundError, match="did you mean .*cifar-10-batches-py"):
        load_cifar10(tmp_path, **SMALL)
    assert load_cifar10(str(tmp_path / "cifar-10-batches-py"), **SMALL)["X_train"].shape[0] == 12


@pytest.mark.parametrize(
    "kwargs,exc,needle",
    [
        (dict(num_training=-1), ValueError, "num_training"),
        (dict(num_training="10"), TypeError, "num_training"),
        (dict(num_validation=1.0), TypeError, "num_validation"),
        (dict(num_test=False), TypeError, "num_test"),
        (dict(num_training=0), ValueError, "num_training: expected at least 1 when subtract_mean=True"),
        (dict(subtract_mean="yes"), TypeError, "subtract_mean"),
        (dict(dtype="uint8"), ValueError, "dtype"),
        (dict(channels_first=None), TypeError, "channels_first"),
    ],
)
def test_cifar_bad_arguments(tmp_path, kwargs, exc, needle):
    _write_cifar(tmp_path)
    with pytest.raises(exc, match="expected") as e:
        load_cifar10(tmp_path, **{**SMALL, **kwargs})
    assert needle in str(e.value) and "got" in str(e.value)


def test_cifar_bad_path_type():
    with pytest.raises(TypeError, match="path: expected a folder path"):
        load_cifar10(123)
