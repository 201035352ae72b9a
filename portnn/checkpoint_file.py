"""The checkpoint file format: host arrays plus a JSON manifest, written as ONE atomic unit.

A checkpoint is one uncompressed ``.npz`` (read with pickle OFF) holding every array
under its name and, under the reserved name ``MANIFEST_KEY``, the UTF-8 bytes of
its manifest::

    {"format": "portnn-checkpoint", "version": 3,
     "arrays": {name: {"shape": [...], "dtype": "float32"}}, "meta": {...}}

The file is written to a temporary name in the same folder, flushed, fsync'ed and
``os.replace``d over the real name, so a reader sees either the previous complete
checkpoint or the new complete one, never a mix (a process killed at any moment
leaves at worst a temporary file, which the next save to that path removes).
A copy of the manifest is written beside it as ``path + ".json"`` for people and
tools; it is informational: ``load_arrays`` reads the copy inside the ``.npz``.

Versions: 3 (this layout) is written; 1 and 2 (the manifest only in the side
file) are still read. A version-1 solver meta is returned in the current layout
(on_nonfinite "raise", no skipped iterations). Any other version is refused,
naming it. Either path of a checkpoint is accepted (``run.npz`` or
``run.npz.json``). A file portnn did not write is "not a portnn checkpoint".

This module knows files, not models or solvers (docs/design.md, "The layers of
the package").
"""

from __future__ import annotations

import glob
import json
import os
import secrets

import numpy as np

FORMAT = "portnn-checkpoint"
VERSION = 3  # what save_arrays writes
READS = (1, 2, 3)  # the versions load_arrays reads
MANIFEST_KEY = "__portnn_manifest__"

__all__ = ["save_arrays", "load_arrays", "checkpoint_path", "unwritable_reason", "check_writable",
           "FORMAT", "VERSION", "READS"]


# --------------------------------------------------------------------------- paths


def checkpoint_path(path) -> str:
    """The .npz of a checkpoint named by either of its paths (``x.npz`` or ``x.npz.json``)."""
    path = os.fspath(path)
    if path.endswith(".json") and os.path.exists(path[: -len(".json")]):
        return path[: -len(".json")]
    return path


def unwritable_reason(path) -> str | None:
    """Why a file cannot be written at ``path`` (None when it can): its folder must be
    a writable directory, or not exist yet under one (it is then created). Probed by
    creating and removing a file: a permission check alone says yes to root in /proc."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return "it is a directory"
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        return f"{folder} is not a directory"
    probe = os.path.join(folder, f".portnn-write-test-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as e:
        return f"cannot create files in {folder} ({e.strerror})"
    os.close(fd)
    os.unlink(probe)
    return None


def check_writable(path, name: str) -> None:
    """Raise ValueError naming ``name`` when no file can be written at ``path``."""
    reason = unwritable_reason(path)
    if reason:
        raise ValueError(f"{name}: cannot write {os.fspath(path)}: {reason}")


# --------------------------------------------------------------------------- writing


def _temporary_name(path: str) -> str:
    # The writer's pid in the name lets a later save tell a dead writer's leftover
    # from a file another live process is writing right now.
    return f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _remove_stale_temporaries(path: str) -> None:
    """Delete ``path.<pid>.<hex>.tmp`` files left by writers that no longer run
    (and the old ``path.<random>.tmp`` names of earlier portnn versions)."""
    for tmp in glob.glob(glob.escape(path) + ".*.tmp") + glob.glob(glob.escape(path) + ".json.*.tmp"):
        parts = os.path.basename(tmp).rsplit(".", 3)
        pid = parts[1] if len(parts) == 4 else ""
        if pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid)):
            continue
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _atomic_write(path: str, write) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"{path}: cannot write the checkpoint: {unwritable_reason(path)}") from None
    tmp = _temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _unlink_quietly(tmp)
        raise OSError(e.errno, f"{path}: cannot write the checkpoint ({e.strerror or e})") from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(p):
    try:
        os.unlink(p)
    except OSError:
        pass


def save_arrays(path, arrays: dict, meta: dict | None = None) -> None:
    """Write host NumPy arrays and JSON-serialisable ``meta`` to ``path`` as one atomic
    checkpoint (plus the informational ``path + ".json"``)."""
    path = os.fspath(path)
    host = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    for k, v in host.items():
        if v.dtype == object:
            raise TypeError(f"arrays[{k!r}]: object arrays cannot be saved (they would need pickle)")
    if MANIFEST_KEY in host:
        raise ValueError(f"arrays: {MANIFEST_KEY!r} is reserved for the manifest")
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "arrays": {k: {"shape": list(v.shape), "dtype": v.dtype.name} for k, v in host.items()},
        "meta": meta or {},
    }
    text = json.dumps(manifest, indent=1, allow_nan=True).encode()
    _remove_stale_temporaries(path)
    embedded = np.frombuffer(text, dtype=np.uint8)
    _atomic_write(path, lambda f: np.savez(f, **host, **{MANIFEST_KEY: embedded}))
    _atomic_write(path + ".json", lambda f: f.write(text))


# --------------------------------------------------------------------------- reading


def load_arrays(path):
    """Read a checkpoint -> (arrays: dict of NumPy, meta: dict).

    ``path``: the .npz or its .json. Refuses object arrays (pickle stays off), files
    portnn did not write, versions it does not read, and arrays that differ from
    the manifest, raising ValueError naming the file.
    """
    path = checkpoint_path(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    arrays = _read_npz(path)
    if MANIFEST_KEY in arrays:
        manifest = _parse_manifest(path, bytes(arrays.pop(MANIFEST_KEY)))
    elif os.path.exists(path + ".json"):  # versions 1 and 2: the manifest beside the arrays
        with open(path + ".json", "rb") as f:
            manifest = _parse_manifest(path + ".json", f.read())
    else:
        raise ValueError(f"{path}: not a portnn checkpoint (no manifest inside it, and no {path}.json)")
    expected = manifest.get("arrays")
    if not isinstance(expected, dict):
        raise ValueError(f"{path}: manifest field 'arrays': expected a dict, got {expected!r}")
    if set(expected) != set(arrays):
        raise ValueError(f"{path}: arrays {sorted(arrays)} do not match the manifest {sorted(expected)}")
    for k, spec in expected.items():
        a = arrays[k]
        if not isinstance(spec, dict) or list(a.shape) != spec.get("shape") or a.dtype.name != spec.get("dtype"):
            raise ValueError(f"{path}: array {k!r} is {a.dtype}{a.shape}, manifest says {spec}")
    meta = manifest.get("meta", {})
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: manifest field 'meta': expected a dict, got {type(meta).__name__}")
    return arrays, _upgrade(meta, manifest["version"])


def _read_npz(path):
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # every .npz is a zip archive; np.load would guess a pickle
        raise ValueError(f"{path}: damaged or not a portnn checkpoint (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        raise ValueError(f"{path}: refused to load ({e})") from None
    except Exception as e:  # zipfile.BadZipFile, EOFError, OSError on damaged files
        raise ValueError(f"{path}: damaged or not a portnn checkpoint ({type(e).__name__}: {e})") from None


def _parse_manifest(where, raw: bytes):
    try:
        manifest = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{where}: not a valid portnn manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{where}: not a portnn checkpoint manifest")
    version = manifest.get("version")
    if isinstance(version, bool) or version not in READS:
        raise ValueError(
            f"{where}: checkpoint format version {version!r}, this portnn reads versions "
            f"{', '.join(map(str, READS))}"
        )
    return manifest


def _upgrade(meta, version):
    """A version-1 meta in the current layout: a v1 solver section lacks
    on_nonfinite, skipped_iterations and rng_step (kept beside, in the model's)."""
    if version != 1 or not isinstance(meta.get("solver"), dict):
        return meta
    model = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    solver = {"verbose": True, "metadata": {}, "on_nonfinite": "raise", "skipped_iterations": [],
              "rng_step": model.get("rng_step", 0)}
    solver.update(meta["solver"])
    return dict(meta, solver=solver)
