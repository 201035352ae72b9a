"""Checkpoint files: arrays in an .npz (loaded with pickle OFF) plus a JSON manifest.

Layout for ``save_arrays(path, arrays, meta)``:
  path                 an uncompressed .npz holding every array under its name
  path + ".json"       {"format": "portnn-checkpoint", "version": 1,
                        "arrays": {name: {"shape": [...], "dtype": "float32"}}, "meta": {...}}
Both are written atomically: to a temporary file in the same folder, flushed and
fsync'ed, then ``os.replace``d over the real name, so a crash never leaves a
half-written file under the real name.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

FORMAT = "portnn-checkpoint"
VERSION = 1


def _atomic_write(path: str, write) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_arrays(path: str, arrays: dict, meta: dict | None = None) -> None:
    """Write host NumPy arrays and JSON-serialisable metadata to ``path`` (+ .json)."""
    host = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    for k, v in host.items():
        if v.dtype == object:
            raise TypeError(f"arrays[{k!r}]: object arrays cannot be saved (they would need pickle)")
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "arrays": {k: {"shape": list(v.shape), "dtype": v.dtype.name} for k, v in host.items()},
        "meta": meta or {},
    }
    _atomic_write(path, lambda f: np.savez(f, **host))
    _atomic_write(path + ".json", lambda f: f.write(json.dumps(manifest, indent=1).encode()))


def load_arrays(path: str):
    """Read a checkpoint written by save_arrays -> (arrays: dict of NumPy, meta: dict).

    Refuses object arrays (pickle stays off) and checks every array against the
    manifest, raising ValueError naming the file on any mismatch.
    """
    with open(path + ".json", "rb") as f:
        try:
            manifest = json.loads(f.read().decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}.json: not a valid portnn manifest ({e})") from None
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}.json: not a portnn checkpoint manifest")
    if manifest.get("version") != VERSION:
        raise ValueError(
            f"{path}.json: checkpoint format version {manifest.get('version')!r}, "
            f"this portnn reads version {VERSION}"
        )
    arrays = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            for k in z.files:
                arrays[k] = z[k]
    except ValueError as e:
        raise ValueError(f"{path}: refused to load ({e})") from None
    except Exception as e:  # zipfile.BadZipFile, EOFError, OSError on damaged files
        raise ValueError(f"{path}: damaged or not an .npz file ({type(e).__name__}: {e})") from None
    expected = manifest.get("arrays", {})
    if set(expected) != set(arrays):
        raise ValueError(f"{path}: arrays {sorted(arrays)} do not match the manifest {sorted(expected)}")
    for k, spec in expected.items():
        a = arrays[k]
        if list(a.shape) != spec["shape"] or a.dtype.name != spec["dtype"]:
            raise ValueError(f"{path}: array {k!r} is {a.dtype}{a.shape}, manifest says {spec}")
    return arrays, manifest.get("meta", {})
