"""CIFAR-10 loader for the "python version" batches, with a restricted unpickler.

The CIFAR-10 python files are pickles, and a plain ``pickle.load`` runs whatever code a
file asks for. This module never calls it: ``_RestrictedUnpickler`` resolves only the
handful of globals a genuine batch (written by Python 2 cPickle, or re-saved by Python 3
with any protocol) needs to describe a NumPy array, and refuses everything else before
it can be called. Even the allowed ones never reach NumPy's own pickle hooks: they are
stand-ins that check the array description (plain bool/int/float dtype, shape, data
length) and build the array with ``np.frombuffer``. Then the contents are validated
(keys, uint8 data of shape (N, 3072), N labels in 0..9).

Download: https://www.cs.toronto.edu/~kriz/cifar.html, file "cifar-10-python.tar.gz";
extracting it gives the folder ``cifar-10-batches-py`` that ``load_cifar10`` reads.
"""

from __future__ import annotations

import math
import numbers
import os
import pickle
import re

import numpy as np

from .._checks import check_bool, check_int, float_dtype_name

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
NUM_CLASSES = 10
IMAGE_SIZE = 3 * 32 * 32
DOWNLOAD_HINT = (
    'download the CIFAR-10 "python version" (cifar-10-python.tar.gz) from '
    "https://www.cs.toronto.edu/~kriz/cifar.html, extract it, and pass the extracted "
    "cifar-10-batches-py folder"
)
_REDOWNLOAD_HINT = (
    "download cifar-10-python.tar.gz again from https://www.cs.toronto.edu/~kriz/cifar.html "
    "and extract it"
)


class CIFAR10FormatError(ValueError):
    """A CIFAR-10 batch file is truncated, damaged, or not in the CIFAR-10 format."""


class UnsafePickleError(CIFAR10FormatError, pickle.UnpicklingError):
    """A batch file asked for a global (function or class) that a CIFAR-10 batch never needs."""


class _Malformed(ValueError):
    """Raised by the array stand-ins; the loader adds the file name."""


# ---------------------------------------------------------------------------------------
# Stand-ins for the globals a pickled NumPy array refers to.

_SIMPLE_DTYPE = re.compile(r"(b1|[iuf][1248])")


def _text(value, what):
    if isinstance(value, bytes):  # Python 2 str, read with encoding="bytes"
        return value.decode("latin-1")
    if isinstance(value, str):
        return value
    raise _Malformed(f"{what}: expected a string, got {type(value).__name__}")


class _DtypeSpec:
    """Stands for ``numpy.dtype(code, align, copy)`` + its pickled state."""

    def __init__(self, code, align=False, copy=False):
        code = _text(code, "array dtype")
        if not _SIMPLE_DTYPE.fullmatch(code):
            raise _Malformed(
                f"array dtype {code!r} is not allowed: a CIFAR-10 batch only holds plain "
                "bool/integer/float arrays"
            )
        self.code = code
        self.byteorder = "|"

    def __setstate__(self, state):
        # NumPy writes (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata]).
        if not isinstance(state, tuple) or len(state) < 5:
            raise _Malformed(f"array dtype: unexpected pickled state {state!r:.80}")
        byteorder = _text(state[1], "array dtype byte order")
        if byteorder not in ("<", ">", "=", "|") or any(s is not None for s in state[2:5]):
            raise _Malformed(
                "array dtype: only plain dtypes are allowed (no byte order other than <>=|, "
                "no sub-arrays, no fields)"
            )
        self.byteorder = byteorder

    def to_numpy(self):
        if self.byteorder in ("<", ">"):
            return np.dtype(self.byteorder + self.code)
        return np.dtype(self.code)


def _as_dtype(d, what):
    if not isinstance(d, _DtypeSpec):
        raise _Malformed(f"{what}: expected a dtype, got {type(d).__name__}")
    return d.to_numpy()


def _array_from_bytes(raw, dtype, shape, order):
    if isinstance(raw, pickle.PickleBuffer):
        raw = raw.raw()
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise _Malformed(f"array data: expected bytes, got {type(raw).__name__}")
    if not isinstance(shape, (tuple, list)) or not all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise _Malformed(f"array shape: expected a tuple of non-negative ints, got {shape!r:.80}")
    count = math.prod(int(s) for s in shape)
    nbytes = memoryview(raw).nbytes
    if count * dtype.itemsize != nbytes:
        raise _Malformed(
            f"array of shape {tuple(shape)} and dtype {dtype} needs {count * dtype.itemsize} "
            f"bytes, the file holds {nbytes}"
        )
    return np.frombuffer(raw, dtype=dtype, count=count).reshape(tuple(int(s) for s in shape), order=order)


class _ArraySpec:
    """Stands for ``_reconstruct(ndarray, (0,), b'b')``; ``__setstate__`` builds the array."""

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        # NumPy writes (version, shape, dtype, is_fortran, rawdata); very old files omit version.
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            raise _Malformed("array: unexpected pickled state")
        shape, dtype, is_fortran, raw = state
        self.array = _array_from_bytes(raw, _as_dtype(dtype, "array"), shape, "F" if is_fortran else "C")


class _NdarrayToken:
    """Stands for the class ``numpy.ndarray``: only usable as _reconstruct's first argument."""

    def __repr__(self):
        return "numpy.ndarray"


_NDARRAY = _NdarrayToken()


def _reconstruct(subtype, shape, typecode):
    if subtype is not _NDARRAY:
        raise _Malformed(f"_reconstruct: expected numpy.ndarray as the array type, got {subtype!r:.80}")
    return _ArraySpec()


def _frombuffer(buf, dtype, shape, order):  # protocol 5 pickles of contiguous arrays
    order = _text(order, "array order")
    if order not in ("C", "F"):
        raise _Malformed(f"array order: expected 'C' or 'F', got {order!r}")
    return _array_from_bytes(buf, _as_dtype(dtype, "array"), shape, order)


def _scalar(dtype, raw):  # NumPy scalars, e.g. labels saved as np.int64
    return _array_from_bytes(raw, _as_dtype(dtype, "scalar"), (), "C")[()]


def _codecs_encode(text, encoding="utf-8"):  # how Python 3 writes bytes with protocol 2
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Malformed("_codecs.encode: only latin-1 text -> bytes is allowed")
    return text.encode("latin-1")


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # NumPy 1.x (and Python 2) files
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # NumPy >= 2
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DtypeSpec,
    ("_codecs", "encode"): _codecs_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only _ALLOWED_GLOBALS (to the stand-ins above)."""

    def __init__(self, file, path):
        super().__init__(file, encoding="bytes")  # keeps Python 2 str as bytes, as CIFAR-10 needs
        self._path = path

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            allowed = sorted({f"{m}.{n}" for m, n in _ALLOWED_GLOBALS})
            raise UnsafePickleError(
                f"{self._path}: refusing to load the global {module}.{name}: a CIFAR-10 batch only "
                f"needs NumPy array reconstruction ({', '.join(allowed)}). The file is not a "
                "genuine CIFAR-10 batch or was altered; nothing in it was run"
            ) from None


# ---------------------------------------------------------------------------------------


def _read_batch(path):
    """Unpickle and validate one batch -> (data uint8 (N, 3072), labels int64 (N,))."""
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, path).load()
    except UnsafePickleError:
        raise
    except (EOFError, pickle.UnpicklingError, _Malformed, ValueError, TypeError, KeyError,
            IndexError, AttributeError, OverflowError, UnicodeDecodeError, RecursionError) as e:
        truncated = isinstance(e, EOFError) or "truncated" in str(e)
        what = "is truncated" if truncated else "is damaged or not a CIFAR-10 batch"
        raise CIFAR10FormatError(
            f"{path}: {what} ({type(e).__name__}: {e}); {_REDOWNLOAD_HINT}"
        ) from e

    def bad(msg):
        return CIFAR10FormatError(f"{path}: not a valid CIFAR-10 batch: {msg}; {_REDOWNLOAD_HINT}")

    if not isinstance(obj, dict):
        raise bad(f"expected a pickled dict, got {type(obj).__name__}")
    batch = {}
    for k, v in obj.items():
        if isinstance(k, (bytes, str)):
            batch[_text(k, "key")] = v.array if isinstance(v, _ArraySpec) else v
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        raise bad(f"missing key(s) {', '.join(repr(k.encode()) for k in missing)} "
                  f"(keys found: {sorted(batch)})")

    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_SIZE:
        got = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
               else type(data).__name__)
        raise bad(f"b'data': expected a uint8 array of shape (N, {IMAGE_SIZE}), got {got}")

    labels = batch["labels"]
    if isinstance(labels, (list, tuple)):
        if not all(isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, (bool, np.bool_))
                   for v in labels):
            raise bad("b'labels': expected a list of ints")
        labels = np.array([int(v) for v in labels], dtype=np.int64)
    elif isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.dtype.kind in "iu":
        labels = labels.astype(np.int64)
    else:
        raise bad(f"b'labels': expected a list of ints, got {type(labels).__name__}")
    if labels.shape[0] != data.shape[0]:
        raise bad(f"b'labels' has {labels.shape[0]} entries but b'data' has {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise bad(f"b'labels': expected values in 0..{NUM_CLASSES - 1}, "
                  f"got values in {labels.min()}..{labels.max()}")
    return data, labels


def _check_folder(path):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a folder path (str or os.PathLike), got {type(path).__name__}")
    path = os.fspath(path)
    expected = ", ".join(TRAIN_FILES + (TEST_FILE,))
    if not os.path.isdir(path):
        what = "is not a folder" if os.path.exists(path) else "does not exist"
        raise FileNotFoundError(
            f"path: the CIFAR-10 folder {path!r} {what}; expected a folder holding {expected}. "
            f"To get them, {DOWNLOAD_HINT}"
        )
    missing = [f for f in TRAIN_FILES + (TEST_FILE,) if not os.path.isfile(os.path.join(path, f))]
    if missing:
        hint = ""
        nested = os.path.join(path, "cifar-10-batches-py")
        if os.path.isdir(nested):
            hint = f" (did you mean {nested!r}?)"
        raise FileNotFoundError(
            f"path: the CIFAR-10 folder {path!r} lacks {', '.join(missing)}{hint}; expected "
            f"{expected}. To get them, {DOWNLOAD_HINT}"
        )
    return path


def load_cifar10(path, num_training=49000, num_validation=1000, num_test=1000,
                 subtract_mean=True, dtype="float32", channels_first=True):
    """Load CIFAR-10 from the extracted "python version" folder (``cifar-10-batches-py``).

    Reads data_batch_1..5 and test_batch (``batches.meta`` is not needed) with a restricted
    unpickler that refuses any file asking to run code (``UnsafePickleError``).

    Splits (host NumPy arrays), from the 50,000 training images in batch order:
        train = the first ``num_training`` images,
        val   = the LAST ``num_validation`` images (the same images whatever num_training),
        test  = the first ``num_test`` images of test_batch.
    num_training + num_validation must not exceed the training images (50,000), and
    num_test the test images (10,000). Defaults: 49,000 / 1,000 / 1,000.

    With ``subtract_mean=True`` the mean image of the TRAIN split (per pixel and channel,
    computed in float64) is subtracted from all three splits; otherwise pixels are
    0..255 as floats.

    Args:
        path: the folder (str or os.PathLike).
        num_training: int >= 1 (>= 0 with subtract_mean=False).
        num_validation, num_test: int >= 0.
        subtract_mean: bool.
        dtype: "float32" (default) or "float64".
        channels_first: True -> images (N, 3, 32, 32); False -> (N, 32, 32, 3).

    Returns a dict: X_train, X_val, X_test float arrays of dtype ``dtype`` shaped as above,
    y_train, y_val, y_test int64 labels (N,) in 0..9.

    Raises:
        FileNotFoundError: the folder or one of the six batch files is missing.
        CIFAR10FormatError (a ValueError): a batch is truncated, damaged or has wrong contents.
        UnsafePickleError (a CIFAR10FormatError and a pickle.UnpicklingError): a batch
            refers to a global that a CIFAR-10 batch never needs; nothing in it was run.
        ValueError / TypeError: a bad argument (the message names it).
    """
    num_training = check_int(num_training, "num_training", minimum=0)
    num_validation = check_int(num_validation, "num_validation", minimum=0)
    num_test = check_int(num_test, "num_test", minimum=0)
    subtract_mean = check_bool(subtract_mean, "subtract_mean")
    dt = np.dtype(float_dtype_name(dtype))
    channels_first = check_bool(channels_first, "channels_first")
    if subtract_mean and num_training < 1:
        raise ValueError(
            "num_training: expected at least 1 when subtract_mean=True (the mean image comes "
            f"from the training split), got {num_training}"
        )
    path = _check_folder(path)

    batches = [_read_batch(os.path.join(path, f)) for f in TRAIN_FILES]
    x_all = np.concatenate([b[0] for b in batches])
    y_all = np.concatenate([b[1] for b in batches])
    del batches
    n_all = x_all.shape[0]
    if num_training + num_validation > n_all:
        raise ValueError(
            f"num_training + num_validation: expected at most {n_all} (the images in "
            f"{', '.join(TRAIN_FILES)}), got {num_training} + {num_validation} = "
            f"{num_training + num_validation}"
        )
    x_test, y_test = _read_batch(os.path.join(path, TEST_FILE))
    if num_test > x_test.shape[0]:
        raise ValueError(
            f"num_test: expected at most {x_test.shape[0]} (the images in {TEST_FILE}), got {num_test}"
        )

    splits = {
        "train": (x_all[:num_training], y_all[:num_training]),
        "val": (x_all[n_all - num_validation:], y_all[n_all - num_validation:]),
        "test": (x_test[:num_test], y_test[:num_test]),
    }
    mean = splits["train"][0].mean(axis=0, dtype=np.float64).astype(dt) if subtract_mean else None

    data = {}
    for k, (x, y) in splits.items():
        x = x.astype(dt)
        if mean is not None:
            x -= mean
        x = x.reshape(-1, 3, 32, 32)
        if not channels_first:
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        data[f"X_{k}"] = x
        data[f"y_{k}"] = np.array(y, dtype=np.int64)
    return data
