"""Saving and loading models and Solvers (``portnn.save`` / ``portnn.load``).

The file format (one atomic .npz with its manifest inside, plus an informational
.json copy; versions) is portnn.checkpoint_file's; ``save_arrays`` and
``load_arrays`` are re-exported here. What a solver file holds is its
``portnn.training_state.TrainingState``; a model file holds ``model.<name>`` arrays.
Meta:
  kind: "model" | "solver"
  model: {class, config (constructor arguments), rng_step (dropout position)}
  solver: TrainingState.meta (solver files only)
This module builds models from files; a Solver is captured with ``Solver.state()``
(``Solver.write_checkpoint``) and rebuilt with ``Solver.from_state``.
"""

from __future__ import annotations

import json

from ._checks import check_int, to_host
from .checkpoint_file import load_arrays, save_arrays  # noqa: F401  (re-exported: portnn.io.load_arrays)
from .models import FullyConnectedNet, Model, Sequential, ThreeLayerConvNet, TwoLayerNet
from .solver import Solver
from .training_state import TrainingState

# --------------------------------------------------------------------------- models and solvers
_MODEL_CLASSES = {c.__name__: c for c in (FullyConnectedNet, TwoLayerNet, ThreeLayerConvNet, Sequential)}


def save(obj, path: str) -> None:
    """Save a model or a Solver (its TrainingState, model included) to ``path``
    (.npz + .json manifest).

    Backend-independent: arrays are stored as NumPy on the host, so a file saved
    from CuPy or torch loads on any backend. Written atomically. Saving a Solver
    whose pending losses hold a diverged step raises DivergenceError (on_nonfinite
    "raise") and writes nothing.
    """
    if isinstance(obj, Solver):
        obj.write_checkpoint(path)
    elif isinstance(obj, Model):
        arrays = {f"model.{k}": to_host(v, k) for k, v in obj.state_dict().items()}
        save_arrays(path, arrays, {"kind": "model", "model": obj.checkpoint_meta()})
    else:
        raise TypeError(f"obj: expected a portnn model or Solver, got {type(obj).__name__}")


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
    model.rng_step = _field(path, "model", lambda: check_int(meta["model"].get("rng_step", 0), "rng_step",
                                                                        minimum=0))
    if kind == "model" or data is None:
        return model
    state = _field(path, "solver", lambda: TrainingState(arrays, meta["solver"]))
    _field(path, "solver", state.check)
    if comm is not None:
        solver_kwargs = dict(solver_kwargs, comm=comm)
    try:
        return Solver.from_state(model, data, state, last_checkpoint=path, **solver_kwargs)
    except (TypeError, ValueError) as e:
        # A setting from the file that the Solver refuses: name the file and the field.
        # Errors about the data or an argument given to load() are the caller's own.
        setting = str(e).split(":")[0].split("[")[0]
        if setting not in state.meta or setting in solver_kwargs:
            raise
        raise type(e)(f"{path}: manifest field solver.{e}") from None


def _field(path, where, read):
    """``read()``, with a TypeError/ValueError/KeyError it raises reported as a bad
    manifest field of the file ``path`` (a hand-edited or damaged checkpoint)."""
    try:
        return read()
    except KeyError as e:
        raise ValueError(f"{path}: manifest field {where}: missing {e}") from None
    except (TypeError, ValueError) as e:
        msg = str(e).removeprefix("training state: ")
        raise ValueError(f"{path}: manifest field {where}.{msg}" if not msg.startswith("missing")
                         else f"{path}: manifest field {where}: {msg}") from None


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
    except (TypeError, ValueError) as e:
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
    return {k: v for k, v in config.items() if k not in ("seed", "reg", "weight_scale", "weight_init", "dtype",
                                                  "dropout_keep_ratio")}


def _jsonable(obj):
    return json.loads(json.dumps(obj))
