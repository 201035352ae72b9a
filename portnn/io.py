"""Checkpoint files: arrays in an .npz (loaded with pickle OFF) plus a JSON manifest,
and the model / Solver save and load built on them.

Layout for ``save_arrays(path, arrays, meta)``:
  path                 an uncompressed .npz holding every array under its name
  path + ".json"       {"format": "portnn-checkpoint", "version": 2,
                        "arrays": {name: {"shape": [...], "dtype": "float32"}}, "meta": {...}}
Both are written atomically: to a temporary file in the same folder, flushed and
fsync'ed, then ``os.replace``d over the real name, so a crash never leaves a
half-written file under the real name.

Versions: this portnn writes version 2 and reads 1 and 2 (READS); any other
version is refused with a message naming both. Version 2 is version 1 plus, in a
solver file's "solver" section, on_nonfinite, skipped_iterations and rng_step;
a version-1 file is read as on_nonfinite="raise", no skipped iterations, and the
model's rng_step (``load_arrays`` returns its meta in the version-2 layout).

Model and solver files (``save`` / ``load``): the arrays and "solver" section of a
solver file are its ``portnn.training_state.TrainingState`` (names and fields are
defined there, once); a model file holds only ``model.<name>`` arrays. Meta:
  kind: "model" | "solver"
  model: {class, config (constructor arguments), rng_step (dropout position)}
  solver: TrainingState.meta (solver files only)
This module reads and writes files and builds models; a Solver is captured with
``Solver.state()`` and rebuilt with ``Solver.from_state``. It installs ``save`` as
the solver's checkpoint writer (``portnn.solver.set_checkpoint_writer``) when imported.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from ._checks import to_host
from .models import FullyConnectedNet, Model, ThreeLayerConvNet, TwoLayerNet
from .solver import Solver, set_checkpoint_writer
from .training_state import TrainingState

FORMAT = "portnn-checkpoint"
VERSION = 2  # what save_arrays writes
READS = (1, 2)  # the versions load_arrays reads


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

    Refuses object arrays (pickle stays off), a manifest of a version this portnn
    does not read, and arrays that differ from the manifest, raising ValueError
    naming the file. A version-1 solver file's meta comes back in the current layout.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    manifest = _read_manifest(path)
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
    return arrays, _upgrade(manifest.get("meta", {}), manifest["version"])


def _read_manifest(path):
    with open(path + ".json", "rb") as f:
        try:
            manifest = json.loads(f.read().decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}.json: not a valid portnn manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path}.json: not a portnn checkpoint manifest")
    version = manifest.get("version")
    if isinstance(version, bool) or version not in READS:
        raise ValueError(
            f"{path}.json: checkpoint format version {version!r}, this portnn reads versions "
            f"{', '.join(map(str, READS))}"
        )
    return manifest


def _upgrade(meta, version):
    """A version-1 meta in the version-2 layout: a v1 solver section lacks
    on_nonfinite, skipped_iterations and rng_step (kept beside, in the model's)."""
    if version != 1 or not isinstance(meta, dict) or not isinstance(meta.get("solver"), dict):
        return meta
    model = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    solver = {"verbose": True, "metadata": {}, "on_nonfinite": "raise", "skipped_iterations": [],
              "rng_step": model.get("rng_step", 0)}
    solver.update(meta["solver"])
    return dict(meta, solver=solver)


# --------------------------------------------------------------------------- models and solvers
_MODEL_CLASSES = {c.__name__: c for c in (FullyConnectedNet, TwoLayerNet, ThreeLayerConvNet)}


def _model_meta(model):
    return {"class": type(model).__name__, "config": model.config, "rng_step": model.rng_step}


def save(obj, path: str) -> None:
    """Save a model or a Solver (its TrainingState, model included) to ``path``
    (.npz + .json manifest).

    Backend-independent: arrays are stored as NumPy on the host, so a file saved
    from CuPy or torch loads on any backend. Written atomically. Saving a Solver
    whose pending losses hold a diverged step raises DivergenceError (on_nonfinite
    "raise") and writes nothing.
    """
    if isinstance(obj, Solver):
        state = obj.state()
        arrays = {k: to_host(v, k) for k, v in state.arrays.items()}
        meta = {"kind": "solver", "model": _model_meta(obj.model), "solver": state.meta}
    elif isinstance(obj, Model):
        arrays = {f"model.{k}": to_host(v, k) for k, v in obj.state_dict().items()}
        meta = {"kind": "model", "model": _model_meta(obj)}
    else:
        raise TypeError(f"obj: expected a portnn model or Solver, got {type(obj).__name__}")
    save_arrays(path, arrays, meta)


# Solver.save_checkpoint writes through this (looked up at each call, so a patched
# portnn.io.save is what the solver uses too).
set_checkpoint_writer(lambda solver, path: save(solver, path))


def _group(arrays, prefix):
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def load(path: str, backend=None, data=None, comm=None, **solver_kwargs):
    """Load what ``save`` wrote.

    A model file gives the model. A Solver file gives a Solver ready to continue
    ``train()`` exactly where it stopped when ``data`` (the same dict of arrays)
    is passed, otherwise just its model. ``backend`` picks where the arrays go
    (default: the current default backend), whatever backend saved them.
    ``solver_kwargs`` override saved Solver settings (e.g. num_epochs=20,
    verbose=False, update_rule=my_callable for a custom rule).
    ``comm`` (a portnn.distributed communicator; collective, call on every rank):
    rank 0 reads the file and broadcasts its contents (so only rank 0 needs to
    see it; a read error is raised on every rank), and the Solver gets ``comm``;
    its ``train()`` then broadcasts rank 0's state before the first step.
    """
    if comm is not None and comm.size > 1:
        arrays, meta = comm.run_on_root(lambda: load_arrays(path))
    else:
        arrays, meta = load_arrays(path)
    kind = meta.get("kind")
    if kind not in ("model", "solver") or "model" not in meta:
        raise ValueError(f"{path}: not a portnn model or solver checkpoint (kind {kind!r})")
    model = _build_model(path, meta["model"], backend)
    model.load_state_dict(_group(arrays, "model."))
    model.rng_step = int(meta["model"].get("rng_step", 0))
    if kind == "model" or data is None:
        return model
    try:
        state = TrainingState(arrays, meta["solver"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
    if comm is not None:
        solver_kwargs = dict(solver_kwargs, comm=comm)
    return Solver.from_state(model, data, state, last_checkpoint=path, **solver_kwargs)


def _build_model(path, mmeta, backend):
    cls = _MODEL_CLASSES.get(mmeta.get("class"))
    if cls is None:
        raise ValueError(f"{path}: unknown model class {mmeta.get('class')!r}; known: {sorted(_MODEL_CLASSES)}")
    config = dict(mmeta.get("config", {}))
    for key in ("input_dim",):
        if isinstance(config.get(key), list):
            config[key] = tuple(config[key])
    try:
        return cls(**config, backend=backend)
    except TypeError as e:
        raise ValueError(f"{path}: model config does not fit {cls.__name__} ({e})") from None


def load_into(model, path: str) -> None:
    """Load the params (and buffers) saved in ``path`` into an existing ``model``.

    The file must hold the same model class and architecture. Everything is read
    and checked before the model is touched: a damaged, mismatched or refused
    file raises and leaves the model exactly as it was.
    """
    arrays, meta = load_arrays(path)
    mmeta = meta.get("model") if isinstance(meta, dict) else None
    if not mmeta:
        raise ValueError(f"{path}: not a portnn model or solver checkpoint")
    if mmeta.get("class") != type(model).__name__ or _architecture(mmeta.get("config", {})) != _architecture(
        _jsonable(model.config)
    ):
        raise ValueError(
            f"{path}: holds a {mmeta.get('class')} with config {mmeta.get('config')}, "
            f"not this {type(model).__name__} with config {model.config}"
        )
    model.load_state_dict(_group(arrays, "model."))
    model.rng_step = int(mmeta.get("rng_step", 0))


def _architecture(config):
    """The constructor arguments that decide which params exist and their shapes."""
    return {k: v for k, v in config.items() if k not in ("seed", "reg", "weight_scale", "dtype", "dropout_keep_ratio")}


def _jsonable(obj):
    return json.loads(json.dumps(obj))
