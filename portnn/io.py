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
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    with open(path + ".json", "rb") as f:
        try:
            manifest = json.loads(f.read().decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}.json: not a valid portnn manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
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


# --------------------------------------------------------------------------- models and solvers
#
# Array names inside a checkpoint:
#   model.<name>          params and buffers (e.g. model.W1, model.bn1.running_mean)
#   optim.<param>.<key>   optimizer state arrays (velocity, cache, m, v)
#   best.<name>           the Solver's best params; best_buffers.<name> their buffers
# Metadata ("meta" in the manifest):
#   kind: "model" | "solver"
#   model: {class, config (constructor arguments), rng_step (dropout position)}
#   solver: epoch, iteration, update rule and its scalar state per parameter,
#           base optim_config, lr_decay, lr_schedule, batch_size, num_epochs, the
#           accuracy sample sizes, print_every, seed (batch order), histories,
#           best_val_acc, checkpoint_name, metadata


def _model_classes():
    from .models import FullyConnectedNet, ThreeLayerConvNet, TwoLayerNet

    return {c.__name__: c for c in (FullyConnectedNet, TwoLayerNet, ThreeLayerConvNet)}


def _model_meta(model):
    return {"class": type(model).__name__, "config": model.config, "rng_step": model.rng_step}


def save(obj, path: str) -> None:
    """Save a model or a Solver (with its model) to ``path`` (.npz + .json manifest).

    Backend-independent: arrays are stored as NumPy on the host, so a file saved
    from CuPy or torch loads on any backend. Written atomically.
    """
    from .models.base import Model
    from .solver import Solver

    if isinstance(obj, Solver):
        arrays, meta = _solver_state(obj)
    elif isinstance(obj, Model):
        be = obj.backend
        arrays = {f"model.{k}": be.to_numpy(v) for k, v in obj.state_dict().items()}
        meta = {"kind": "model", "model": _model_meta(obj)}
    else:
        raise TypeError(f"obj: expected a portnn model or Solver, got {type(obj).__name__}")
    save_arrays(path, arrays, meta)


def _solver_state(solver):
    be = solver.backend
    solver._flush_losses()  # (may raise DivergenceError: never checkpoint a diverged run)
    arrays = {f"model.{k}": be.to_numpy(v) for k, v in solver.model.state_dict().items()}
    scalars = {}
    for p, config in solver.optim_configs.items():
        scalars[p] = {}
        for key, value in config.items():
            if hasattr(value, "shape"):
                arrays[f"optim.{p}.{key}"] = be.to_numpy(value)
            else:
                scalars[p][key] = value
    arrays.update({f"best.{k}": be.to_numpy(v) for k, v in solver.best_params.items()})
    arrays.update({f"best_buffers.{k}": be.to_numpy(v) for k, v in solver._best_buffers.items()})
    meta = {
        "kind": "solver",
        "model": _model_meta(solver.model),
        "solver": {
            "epoch": solver.epoch,
            "iteration": solver.iteration,
            "update_rule": solver.update_rule_name,
            "optim_config": solver.optim_config,
            "optim_scalars": scalars,
            "lr_decay": solver.lr_decay,
            "lr_schedule": None if solver.lr_schedule is None else solver.lr_schedule.to_dict(),
            "batch_size": solver.batch_size,
            "num_epochs": solver.num_epochs,
            "num_train_samples": solver.num_train_samples,
            "num_val_samples": solver.num_val_samples,
            "print_every": solver.print_every,
            "verbose": solver.verbose,
            "seed": solver.seed,
            "checkpoint_name": solver.checkpoint_name,
            "loss_history": solver.loss_history,
            "train_acc_history": solver.train_acc_history,
            "val_acc_history": solver.val_acc_history,
            "best_val_acc": solver.best_val_acc,
            "metadata": solver.metadata,
        },
    }
    return arrays, meta


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
    if comm is not None:
        solver_kwargs = dict(solver_kwargs, comm=comm)
    return _build_solver(path, model, arrays, meta["solver"], data, solver_kwargs)


def _build_model(path, mmeta, backend):
    classes = _model_classes()
    cls = classes.get(mmeta.get("class"))
    if cls is None:
        raise ValueError(f"{path}: unknown model class {mmeta.get('class')!r}; known: {sorted(classes)}")
    config = dict(mmeta.get("config", {}))
    for key in ("input_dim",):
        if isinstance(config.get(key), list):
            config[key] = tuple(config[key])
    try:
        return cls(**config, backend=backend)
    except TypeError as e:
        raise ValueError(f"{path}: model config does not fit {cls.__name__} ({e})") from None


def _build_solver(path, model, arrays, smeta, data, overrides):
    from . import schedules
    from .solver import Solver

    kwargs = {
        "update_rule": smeta["update_rule"],
        "optim_config": smeta["optim_config"],
        "lr_decay": smeta["lr_decay"],
        "lr_schedule": None if smeta["lr_schedule"] is None else schedules.from_dict(smeta["lr_schedule"]),
        "batch_size": smeta["batch_size"],
        "num_epochs": smeta["num_epochs"],
        "num_train_samples": smeta["num_train_samples"],
        "num_val_samples": smeta["num_val_samples"],
        "print_every": smeta["print_every"],
        "verbose": smeta.get("verbose", True),
        "seed": smeta["seed"],
        "checkpoint_name": smeta["checkpoint_name"],
        "metadata": smeta.get("metadata", {}),
    }
    kwargs.update(overrides)
    solver = Solver(model, data, **kwargs)
    be, dtype = model.backend, model.dtype
    solver.epoch = int(smeta["epoch"])
    solver.iteration = int(smeta["iteration"])
    solver.loss_history = [float(v) for v in smeta["loss_history"]]
    solver.train_acc_history = list(smeta["train_acc_history"])
    solver.val_acc_history = list(smeta["val_acc_history"])
    solver.best_val_acc = float(smeta["best_val_acc"])
    optim_arrays = _group(arrays, "optim.")
    configs = {}
    for p in model.params:
        config = dict(smeta["optim_scalars"].get(p, {}))
        for key in [k for k in optim_arrays if k.startswith(p + ".")]:
            config[key[len(p) + 1:]] = be.asarray(optim_arrays[key], dtype=dtype)
        configs[p] = config
    solver.optim_configs = configs
    solver.best_params = {k: be.asarray(v, dtype=dtype) for k, v in _group(arrays, "best.").items()}
    solver._best_buffers = {k: be.asarray(v, dtype=dtype) for k, v in _group(arrays, "best_buffers.").items()}
    solver.last_checkpoint = path
    return solver


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
