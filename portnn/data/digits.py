"""The bundled UCI handwritten digits (1,797 8x8 images, 10 classes, CC BY 4.0).

The data ships with portnn as ``digits.csv.gz`` (see ``DIGITS_LICENSE.txt`` for the
attribution), so it works offline and needs nothing beyond NumPy. Loading takes a
few milliseconds; the parsed file is cached in memory, and every call returns
fresh arrays that the caller may modify.
"""

from __future__ import annotations

import functools
import gzip
from importlib import resources

import numpy as np

from .._checks import check_bool, check_int, float_dtype_name

NUM_IMAGES = 1797
NUM_CLASSES = 10
IMAGE_SHAPE = (1, 8, 8)
MAX_PIXEL = 16

_FILE_NAME = "digits.csv.gz"


@functools.lru_cache(maxsize=1)
def _raw():
    """Parse the bundled file once -> (pixels uint8 (1797, 64), labels uint8 (1797,)), read-only."""
    where = f"portnn/data/{_FILE_NAME}"
    try:
        with resources.files(__package__).joinpath(_FILE_NAME).open("rb") as f:
            with gzip.GzipFile(fileobj=f) as g:
                table = np.loadtxt(g, delimiter=",", dtype=np.int64, ndmin=2)
    except FileNotFoundError as e:
        raise RuntimeError(
            f"{where} is missing from this installation of portnn; reinstall portnn"
        ) from e
    except (OSError, EOFError, ValueError) as e:
        raise RuntimeError(
            f"{where} is damaged ({type(e).__name__}: {e}); reinstall portnn"
        ) from e
    if table.shape != (NUM_IMAGES, 65):
        raise RuntimeError(
            f"{where} is damaged: expected a table of shape ({NUM_IMAGES}, 65), "
            f"got {table.shape}; reinstall portnn"
        )
    pixels, labels = table[:, :64], table[:, 64]
    if pixels.min() < 0 or pixels.max() > MAX_PIXEL or labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise RuntimeError(f"{where} is damaged: values out of range; reinstall portnn")
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


def _stratified_split(labels, num_val, num_test, seed):
    """Seeded, stratified split of range(N) -> (train, val, test) index arrays.

    Each class is shuffled with the seed; its members get positions (rank + 0.5) / n_class,
    spread evenly over [0, 1). Sorting all images by that position (random tie-break)
    interleaves the classes, so every contiguous block of the order holds each class in
    proportion to its size (within one or two images). Test is the first block, val
    the next one, train the rest; each split is then shuffled.
    """
    n = labels.shape[0]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    grouped = perm[np.argsort(labels[perm], kind="stable")]
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    g_labels = labels[grouped]
    rank = np.arange(n) - starts[g_labels]
    position = (rank + 0.5) / counts[g_labels]
    tie = rng.random(n)
    order = grouped[np.lexsort((tie, position))]
    test = order[:num_test]
    val = order[num_test : num_test + num_val]
    train = order[num_test + num_val :]
    return rng.permutation(train), rng.permutation(val), rng.permutation(test)


def load_digits(num_val=300, num_test=300, seed=0, dtype="float32", flatten=True, normalize=True):
    """Load the bundled 8x8 handwritten digits as train/val/test splits (host NumPy arrays).

    Split: a stratified split of the 1,797 images, fixed by ``seed``: test gets
    ``num_test`` images, val ``num_val``, train the remaining ``1797 - num_val - num_test``
    (1,197 / 300 / 300 with the defaults). Every class appears in each split in
    proportion to its size (within two images). The same ``seed`` gives the same
    split, in the same order, on every call and every machine; ``num_val`` and
    ``num_test`` change which images fall where. Splits never share an image.

    Preprocessing: with ``normalize=True`` pixels (integers 0..16) are divided by 16,
    giving [0, 1], and then the per-pixel mean of the TRAIN split (64 values, computed
    in float64) is subtracted from all three splits, so X_train has zero mean per
    pixel. With ``normalize=False`` the raw pixel values 0..16 are returned as floats.

    Args:
        num_val, num_test: int >= 0, with num_val + num_test <= 1796.
        seed: int >= 0.
        dtype: "float32" (default) or "float64", the dtype of the images.
        flatten: True -> images of shape (N, 64); False -> (N, 1, 8, 8) for CNNs.
        normalize: see above.

    Returns a dict of NumPy arrays:
        X_train (N_train, 64) or (N_train, 1, 8, 8), dtype ``dtype``; y_train (N_train,) int64
        X_val   (num_val, ...),  y_val (num_val,) int64
        X_test  (num_test, ...), y_test (num_test,) int64
    Labels are the digits 0..9.

    Raises ValueError naming the argument when an argument is out of range.
    """
    num_val = check_int(num_val, "num_val", minimum=0)
    num_test = check_int(num_test, "num_test", minimum=0)
    if num_val + num_test > NUM_IMAGES - 1:
        raise ValueError(
            f"num_val + num_test: expected at most {NUM_IMAGES - 1} so that at least one of the "
            f"{NUM_IMAGES} images is left for training, got {num_val} + {num_test} = {num_val + num_test}"
        )
    seed = check_int(seed, "seed", minimum=0)
    dt = np.dtype(float_dtype_name(dtype))
    flatten = check_bool(flatten, "flatten")
    normalize = check_bool(normalize, "normalize")

    pixels, labels = _raw()
    idx = dict(zip(("train", "val", "test"), _stratified_split(labels, num_val, num_test, seed)))

    xs = {k: pixels[i].astype(np.float64) for k, i in idx.items()}
    if normalize:
        for k in xs:
            xs[k] /= MAX_PIXEL
        mean = xs["train"].mean(axis=0)
        for k in xs:
            xs[k] -= mean

    shape = (-1, 64) if flatten else (-1,) + IMAGE_SHAPE
    data = {}
    for k in ("train", "val", "test"):
        data[f"X_{k}"] = np.ascontiguousarray(xs[k].astype(dt).reshape(shape))
        data[f"y_{k}"] = labels[idx[k]].astype(np.int64)
    return data
