"""The Solver's resumable state, defined once: what a training run is, the names
its parts go by, and how it becomes plain data (arrays + a JSON-able dict) and
back onto a Solver.

Checkpoints (``Solver.write_checkpoint``, ``portnn.io``) write it to a file; the data-parallel start-up
(``Solver._sync_from_root``) broadcasts rank 0's copy; both use these names, so
a field added here reaches both.

Contract
  TrainingState(arrays, meta)
    arrays  dict name -> array. ``capture`` gives the solver's own backend arrays
            (no copies: portnn never updates an array in place, so references are
            snapshots). ``restore`` accepts arrays of the solver's backend or host
            (NumPy) arrays and converts them to the model's backend and dtype.
    meta    dict of JSON-serialisable values (dicts, lists, str, numbers, bools,
            None); histories may hold NaN/inf, which Python's json reads back.
    The constructor checks that every field below is in ``meta`` (ValueError
    naming the missing ones); values are checked when restored.

Array names
  model.<name>          model params and buffers (model.W1, model.bn1.running_mean)
  optim.<param>.<key>   optimizer state arrays per parameter (velocity, cache, m, v)
  best.<name>           the best params so far
  best_buffers.<name>   the buffers that go with them

meta fields (one flat dict)
  settings (SETTINGS): the Solver's constructor arguments that change what
    training does: update_rule (its name), optim_config, lr_decay, lr_schedule
    (Schedule.to_dict() or None), batch_size, num_epochs, num_train_samples,
    num_val_samples, print_every, verbose, seed, checkpoint_name, on_nonfinite,
    metadata. ``settings()`` turns them back into constructor arguments.
  progress (PROGRESS): epoch, iteration, rng_step (the model's dropout position),
    loss_history, train_acc_history, val_acc_history, best_val_acc,
    skipped_iterations, optim_scalars ({param: {key: number}}: the optimizer
    state that is not an array, e.g. Adam's t, the decayed learning_rate).

Not part of the state: the data, callbacks, the communicator (and the model's
per-rank dropout stream), last_checkpoint, and ``compile`` (how steps are
computed, not what: a compiled run's checkpoint resumes eagerly, on any backend,
unless compile=True is passed again).

The Solver attributes read and written here are its public ones: model,
optim_configs, best_params, best_buffers, epoch, iteration, the histories,
best_val_acc, skipped_iterations and the settings (update_rule_name for
update_rule). Applying settings to an existing Solver validates them, so that is
the Solver's job (``Solver.load_state``); ``restore`` sets the rest.
"""

from __future__ import annotations

from . import schedules
from ._checks import check_int, to_host

SETTINGS = (
    "update_rule", "optim_config", "lr_decay", "lr_schedule", "batch_size", "num_epochs",
    "num_train_samples", "num_val_samples", "print_every", "verbose", "seed", "checkpoint_name",
    "on_nonfinite", "metadata",
)
PROGRESS = (
    "epoch", "iteration", "rng_step", "loss_history", "train_acc_history", "val_acc_history",
    "best_val_acc", "skipped_iterations", "optim_scalars",
)


def _is_array(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _group(arrays, prefix):
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


class TrainingState:
    """A Solver's resumable state as ``arrays`` (name -> array) and ``meta`` (JSON-able dict)."""

    def __init__(self, arrays: dict, meta: dict):
        if not isinstance(arrays, dict) or not isinstance(meta, dict):
            raise TypeError(f"TrainingState: expected (dict, dict), got ({type(arrays).__name__}, "
                            f"{type(meta).__name__})")
        missing = [k for k in SETTINGS + PROGRESS if k not in meta]
        if missing:
            raise ValueError(f"training state: missing fields {missing}")
        self.arrays = arrays
        self.meta = meta

    def __repr__(self):
        m = self.meta
        return f"TrainingState(epoch={m['epoch']}, iteration={m['iteration']}, {len(self.arrays)} arrays)"

    # ------------------------------------------------------------------ solver -> state
    @classmethod
    def capture(cls, solver) -> TrainingState:
        """The state of ``solver`` now (its losses must already be on the host: use
        ``Solver.state()``, which reads them first)."""
        model = solver.model
        arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
        optim_scalars = {}
        for p, config in solver.optim_configs.items():
            optim_scalars[p] = {k: v for k, v in config.items() if not _is_array(v)}
            arrays.update({f"optim.{p}.{k}": v for k, v in config.items() if _is_array(v)})
        arrays.update({f"best.{k}": v for k, v in solver.best_params.items()})
        arrays.update({f"best_buffers.{k}": v for k, v in solver.best_buffers.items()})
        meta = {name: getattr(solver, name) for name in SETTINGS if name not in ("update_rule", "lr_schedule")}
        meta.update(
            update_rule=solver.update_rule_name,
            lr_schedule=None if solver.lr_schedule is None else solver.lr_schedule.to_dict(),
            optim_config=dict(solver.optim_config),
            metadata=dict(solver.metadata),
            epoch=solver.epoch,
            iteration=solver.iteration,
            rng_step=model.rng_step,
            loss_history=list(solver.loss_history),
            train_acc_history=list(solver.train_acc_history),
            val_acc_history=list(solver.val_acc_history),
            best_val_acc=solver.best_val_acc,
            skipped_iterations=list(solver.skipped_iterations),
            optim_scalars=optim_scalars,
        )
        return cls(arrays, meta)

    def check(self) -> None:
        """Type-check the progress fields (a hand-edited or damaged manifest), naming
        the field: "epoch: expected an integer >= 0, got 'two'". The settings are
        checked by the Solver when applied."""
        m = self.meta
        for name in ("epoch", "iteration", "rng_step"):
            check_int(m[name], name, minimum=0)
        for name in ("loss_history", "train_acc_history", "val_acc_history", "skipped_iterations"):
            if not isinstance(m[name], list):
                raise TypeError(f"{name}: expected a list, got {m[name]!r}")
        for name in ("loss_history", "train_acc_history", "val_acc_history"):
            for v in m[name]:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise TypeError(f"{name}: expected a list of numbers, got an entry {v!r}")
        if isinstance(m["best_val_acc"], bool) or not isinstance(m["best_val_acc"], (int, float)):
            raise TypeError(f"best_val_acc: expected a number, got {m['best_val_acc']!r}")
        for i in m["skipped_iterations"]:
            check_int(i, "skipped_iterations", minimum=1)
        scalars = m["optim_scalars"]
        if not isinstance(scalars, dict) or not all(isinstance(v, dict) for v in scalars.values()):
            raise TypeError(f"optim_scalars: expected a dict of dicts (one per parameter), got {scalars!r}")

    def checkpoint_contents(self, model):
        """(host arrays, meta) of a solver checkpoint file: this state plus what
        rebuilds ``model`` (``Model.checkpoint_meta``)."""
        arrays = {k: to_host(v, k) for k, v in self.arrays.items()}
        return arrays, {"kind": "solver", "model": model.checkpoint_meta(), "solver": self.meta}

    # ------------------------------------------------------------------ state -> solver
    def settings(self) -> dict:
        """The settings as Solver constructor arguments (update_rule by name,
        lr_schedule rebuilt)."""
        out = {k: self.meta[k] for k in SETTINGS}
        out["optim_config"] = dict(out["optim_config"] or {})
        out["metadata"] = dict(out["metadata"] or {})
        if out["lr_schedule"] is not None:
            out["lr_schedule"] = schedules.from_dict(out["lr_schedule"])
        return out

    def restore(self, solver) -> None:
        """Set ``solver``'s model, optimizer state, best params and progress from
        this state (not its settings: see ``Solver.load_state``). The model's
        state is checked (names, shapes) before anything is assigned."""
        model, be, m = solver.model, solver.backend, self.meta
        model.load_state_dict(_group(self.arrays, "model."))
        model.rng_step = check_int(m["rng_step"], "training state rng_step", minimum=0)

        def on_device(group):
            return {k: be.asarray(v if be.is_array(v) else to_host(v, f"training state {group}{k}"),
                                  dtype=model.dtype) for k, v in _group(self.arrays, group).items()}

        optim_arrays = on_device("optim.")
        configs = {}
        for p in model.params:
            config = dict(m["optim_scalars"].get(p, {}))
            config.update({k[len(p) + 1:]: v for k, v in optim_arrays.items() if k.startswith(p + ".")})
            configs[p] = config
        solver.optim_configs = configs
        solver.best_params = on_device("best.")
        solver.best_buffers = on_device("best_buffers.")
        solver.epoch = check_int(m["epoch"], "training state epoch", minimum=0)
        solver.iteration = check_int(m["iteration"], "training state iteration", minimum=0)
        solver.loss_history = [float(v) for v in m["loss_history"]]
        solver.train_acc_history = [float(v) for v in m["train_acc_history"]]
        solver.val_acc_history = [float(v) for v in m["val_acc_history"]]
        solver.best_val_acc = float(m["best_val_acc"])
        solver.skipped_iterations = [check_int(i, "training state skipped_iterations", minimum=1)
                                     for i in m["skipped_iterations"]]
