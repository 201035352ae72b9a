"""The training loop: minibatches from host data, update rules, learning-rate
decay and schedules, accuracy checks, best-params tracking, progress output,
callbacks and checkpoints that resume exactly.

What a run is (and so what a checkpoint or the data-parallel start-up carries)
is defined once, in portnn.training_state; the Solver captures it (``state()``)
and continues from it (``load_state``, ``from_state``). Checkpoint files are
written with portnn.checkpoint_file (one atomic file per checkpoint).

Host <-> device traffic is explicit and rare: one ``Backend.asarray`` per
minibatch (images and labels), loss values gathered on the device and read back
once per report (``print_every``) or epoch, and one read per accuracy check.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, NamedTuple

from . import optim
from . import random as prandom
from . import schedules as sched
from ._checks import (
    check_finite_host,
    check_float_in,
    check_labels_host,
    check_positive_int,
    dtype_str,
    float_dtype_name,
    to_host,
)
from .checkpoint_file import check_writable, save_arrays
from .data.batches import epoch_permutation, subsample
from .distributed import mark_all_ranks, raised_on_all_ranks, shard_batch
from .training_state import TrainingState

_LOSS_KEY = " loss"  # rides along with the gradients in the per-step allreduce

class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss or gradient.

    Attributes: iteration (1-based step that produced it), last_checkpoint (path
    of the last checkpoint written before it, or None).
    """

    def __init__(self, message, iteration, last_checkpoint):
        super().__init__(message)
        self.iteration = iteration
        self.last_checkpoint = last_checkpoint


class Solver:
    """Trains a classification model (FullyConnectedNet, ThreeLayerConvNet, ...).

    data : dict with 'X_train' (N, ...), 'y_train' (N,), 'X_val', 'y_val'; NumPy
        arrays on the host are fine (arrays of the model's backend also work).
    update_rule : "sgd" | "sgd_momentum" | "rmsprop" | "adam" or a callable
        (w, dw, config) -> (next_w, config).
    optim_config : hyper-parameters given to the update rule (each parameter gets
        its own copy, which then holds that parameter's optimizer state).
    lr_decay : learning_rate is multiplied by this after every epoch.
    lr_schedule : optional ``portnn.schedules.Schedule``; the learning rate of each
        step is then optim_config['learning_rate'] * lr_decay**epoch *
        schedule.factor(iteration, epoch) (optim_config must give learning_rate).
    batch_size, num_epochs : minibatch size; epochs to train (an epoch is
        N // batch_size steps over a seeded permutation of the training set).
    num_train_samples / num_val_samples : samples used for the accuracy checks
        after each epoch (None = all).
    checkpoint_name : if set, ``{checkpoint_name}_epoch_{E}.npz`` (+ .json) is
        written after every epoch; ``portnn.load(path, data=data)`` resumes it.
    print_every : report the loss every this many iterations.
    verbose : False prints nothing. True shows a tqdm progress bar per epoch when
        stderr is a terminal and tqdm is installed, plain log lines otherwise.
    seed : minibatch order and accuracy subsampling; None draws a fresh seed.
    callbacks : objects with optional ``on_iteration(solver)`` and
        ``on_epoch_end(solver)`` methods. Setting ``solver.stop_training = True``
        in one ends training after the current step.
    on_nonfinite : what to do when a step's loss or gradient is NaN/Inf.
        "raise" (default): stop with a DivergenceError naming the iteration and the
        last good checkpoint; best_params are left intact. To avoid a device sync
        per step the check is read with the losses, i.e. at the next report
        (print_every) or epoch end, so the model's params may hold the diverged
        values; best_params and the checkpoints hold good ones.
        "skip": the bad step's update is not applied (params and optimizer state
        unchanged) and its iteration is listed in ``skipped_iterations``. This
        reads one flag per step from the device.
    comm : a ``portnn.distributed`` communicator for data-parallel training (run
        the same script on every rank, e.g. under ``mpiexec -n N``); None (default)
        is the plain single-process loop. With a communicator ``batch_size`` is the
        PER-RANK batch (a step sees batch_size * comm.size samples); train() first
        broadcasts rank 0's params, batchnorm statistics, optimizer state, seed and
        progress; gradients (and the loss) are averaged every step; batchnorm
        statistics are averaged before each evaluation and checkpoint; accuracies
        are computed on shards and summed; only rank 0 prints and writes
        checkpoints (then all ranks pass a barrier); each rank draws its own
        dropout masks. An exception on one rank aborts every rank
        (``comm.abort``) instead of leaving the others waiting. train(),
        save_checkpoint() are collective: call them on every rank.
    compile : True runs each step (loss, gradients, update) as one compiled
        program (``Backend.compile``: JAX's jit; other backends raise a
        BackendError). Same results to float32 rounding, same dropout masks;
        compiled once for a fixed batch size (plus once or twice as the optimizer
        state and batchnorm statistics appear), learning-rate decay and schedules
        included. Needs on_nonfinite="raise" and no comm. Under it the update rule
        is traced: a custom rule gets learning_rate (and t, if it keeps one) as 0-d
        arrays. A run's way of computing, not part of its state: pass it again to
        ``portnn.load`` / ``from_state`` to resume compiled.
    After ``train()``: loss_history (one float per iteration), train_acc_history,
    val_acc_history (one at the start, then one per epoch; a batchnorm model that
    was never trained cannot score, so its histories start after epoch 1), best_val_acc,
    best_params and best_buffers (their batchnorm statistics; both also copied
    into the model), skipped_iterations.
    State: ``state()`` is everything a resumed run needs (portnn.training_state);
    ``load_state(state)`` continues from one and ``Solver.from_state(model, data,
    state, **overrides)`` builds a solver that does; checkpoints are written from it.
    """

    def __init__(
        self,
        model,
        data,
        update_rule="sgd",
        optim_config=None,
        lr_decay=1.0,
        batch_size=100,
        num_epochs=10,
        num_train_samples=1000,
        num_val_samples=None,
        checkpoint_name=None,
        print_every=10,
        verbose=True,
        seed=None,
        callbacks=None,
        lr_schedule=None,
        metadata=None,
        on_nonfinite="raise",
        comm=None,
        compile=False,
    ):
        self.model = model
        self.backend = model.backend
        self._set_data(data)
        self._configure(update_rule=update_rule, optim_config=optim_config, lr_decay=lr_decay,
                        lr_schedule=lr_schedule, batch_size=batch_size, num_epochs=num_epochs,
                        num_train_samples=num_train_samples, num_val_samples=num_val_samples,
                        checkpoint_name=checkpoint_name, print_every=print_every, verbose=verbose, seed=seed,
                        metadata=metadata, on_nonfinite=on_nonfinite)
        self._set_compile(compile, comm)  # before the communicator touches the model
        self.callbacks = list(callbacks or [])
        self.comm = comm
        if comm is not None:
            if not all(hasattr(comm, a) for a in ("rank", "size", "allreduce_mean", "bcast", "barrier")):
                raise TypeError(f"comm: expected a portnn.distributed communicator, got {comm!r}")
            self.model.rng_stream = comm.rank  # per-rank dropout masks, still reproducible
        if self.checkpoint_name is not None and (comm is None or comm.rank == 0):
            # Checked now, not after the first epoch's work (a parent that is a file, no
            # permission). Only the rank that writes checks: the others may not see the folder.
            check_writable(f"{self.checkpoint_name}_epoch_1.npz", "checkpoint_name")
        self._reset()

    def _set_compile(self, compile, comm):
        """compile=True: check that it can work here and build the compiled step."""
        if not isinstance(compile, bool):
            raise TypeError(f"compile: expected True or False, got {compile!r}")
        self.compile = compile
        self._compiled = None
        if not compile:
            return
        self.backend.compile(lambda: None)  # BackendError here unless the backend compiles
        self._check_compile_with(self.on_nonfinite)
        if comm is not None:
            raise ValueError("compile: compile=True does not support data-parallel training (comm); "
                             "use compile=False with comm")
        self._compiled = _CompiledStep(self)

    def _check_compile_with(self, on_nonfinite):
        if self.compile and on_nonfinite == "skip":
            raise ValueError(
                "on_nonfinite: 'skip' decides at every step on the host whether to apply it (one device "
                "read per step), which a compiled step avoids; use on_nonfinite='raise' (the default, "
                "checked at each report) with compile=True")

    def _configure(self, *, update_rule, optim_config, lr_decay, lr_schedule, batch_size, num_epochs,
                   num_train_samples, num_val_samples, checkpoint_name, print_every, verbose, seed, metadata,
                   on_nonfinite):
        """Check and set the settings (training_state.SETTINGS; __init__ documents them)."""
        if isinstance(update_rule, str):
            self.update_rule_name = update_rule
            self.update_rule = optim.get_update_rule(update_rule)
        elif callable(update_rule):
            self.update_rule_name = getattr(update_rule, "__name__", "custom")
            self.update_rule = update_rule
        else:
            raise TypeError(f"update_rule: expected a name or a callable, got {update_rule!r}")
        self.optim_config = dict(optim_config or {})
        optim.check_config_keys(self.update_rule, self.optim_config)  # a typo ('lr') would train at the default
        if "learning_rate" in self.optim_config:
            check_float_in(self.optim_config["learning_rate"], "optim_config['learning_rate']", 0.0, math.inf)
        if lr_schedule is not None:
            if not isinstance(lr_schedule, sched.Schedule):
                raise TypeError(f"lr_schedule: expected a portnn.schedules.Schedule, got {lr_schedule!r}")
            if "learning_rate" not in self.optim_config:
                raise ValueError("lr_schedule: needs optim_config['learning_rate'] as the base rate")
        self.lr_schedule = lr_schedule
        self.lr_decay = check_float_in(lr_decay, "lr_decay", 0.0, math.inf)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.num_epochs = check_positive_int(num_epochs, "num_epochs", minimum=0)
        self.num_train_samples = num_train_samples
        self.num_val_samples = num_val_samples
        self.checkpoint_name = None if checkpoint_name is None else os.fspath(checkpoint_name)
        self.print_every = check_positive_int(print_every, "print_every")
        self.verbose = bool(verbose)
        self.seed = prandom.new_seed() if seed is None else int(seed)
        self.metadata = dict(metadata or {})  # saved in checkpoints (e.g. the CLI's arguments)
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"on_nonfinite: expected 'raise' or 'skip', got {on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite

    def _set_data(self, data):
        for key in ("X_train", "y_train", "X_val", "y_val"):
            if key not in data:
                raise ValueError(f"data: missing key {key!r} (need X_train, y_train, X_val, y_val)")
        X_train = to_host(data["X_train"], "data['X_train']")
        X_val = to_host(data["X_val"], "data['X_val']")
        C = self.model.num_classes
        y_train = check_labels_host(to_host(data["y_train"], "data['y_train']"), X_train.shape[0], C,
                                    "data['y_train']")
        y_val = check_labels_host(to_host(data["y_val"], "data['y_val']"), X_val.shape[0], C, "data['y_val']")
        if X_train.shape[0] == 0:
            raise ValueError("data['X_train']: expected at least one training sample, got 0")
        # Once, on the host: NaN/inf samples would train (or score) silently wrong.
        check_finite_host(X_train, "data['X_train']")
        check_finite_host(X_val, "data['X_val']")
        self.X_train, self.y_train, self.X_val, self.y_val = X_train, y_train, X_val, y_val

    # ------------------------------------------------------------------ state
    def _reset(self):
        self.epoch = 0
        self.iteration = 0
        self.best_val_acc = 0.0
        self.best_params = {}
        self.best_buffers = {}
        self.loss_history = []
        self.train_acc_history = []
        self.val_acc_history = []
        self.optim_configs = {p: dict(self.optim_config) for p in self.model.params}
        self._pending_losses = []  # (iteration, stack([loss, sum of all grads])) on the device
        self.skipped_iterations = []
        self.stop_training = False
        self.last_checkpoint = None
        self._buffers_synced_at = None

    @property
    def iterations_per_epoch(self):
        if self.comm is not None:
            return max(self.X_train.shape[0] // (self.batch_size * self.comm.size), 1)
        return max(self.X_train.shape[0] // self.batch_size, 1)

    def current_learning_rate(self):
        """The learning rate the next step uses (first parameter's config)."""
        config = next(iter(self.optim_configs.values()), {})
        return config.get("learning_rate", self.optim_config.get("learning_rate"))

    def state(self) -> TrainingState:
        """The resumable training state (portnn.training_state), holding this
        solver's backend arrays (no copies). Reads the losses still on the device
        first, so under on_nonfinite="raise" a diverged step raises DivergenceError
        here: a diverged run is never captured."""
        self._flush_losses()
        return TrainingState.capture(self)

    def load_state(self, state: TrainingState, settings: bool = True) -> None:
        """Continue from ``state``: model params and buffers, optimizer state, best
        params, progress (epoch, iteration, histories, skipped iterations) and,
        unless ``settings=False``, its settings (checked as in the constructor; the
        update rule is looked up by name unless it is this solver's own)."""
        if not isinstance(state, TrainingState):
            raise TypeError(f"state: expected a portnn.training_state.TrainingState, got {type(state).__name__}")
        if settings:
            kwargs = state.settings()
            if kwargs["update_rule"] == self.update_rule_name:
                kwargs["update_rule"] = self.update_rule  # keeps a custom callable
            self._check_compile_with(kwargs["on_nonfinite"])
            self._configure(**kwargs)
        state.restore(self)
        self._pending_losses = []
        self._buffers_synced_at = None

    @classmethod
    def from_state(cls, model, data, state: TrainingState, last_checkpoint=None, **overrides):
        """A Solver that continues ``state`` on ``model`` and ``data``: built with the
        state's settings, ``overrides`` (constructor arguments, e.g. num_epochs=20,
        comm=..., update_rule=my_callable) taking precedence. ``last_checkpoint``:
        the file it came from, if any (named by a later DivergenceError)."""
        if not isinstance(state, TrainingState):
            raise TypeError(f"state: expected a portnn.training_state.TrainingState, got {type(state).__name__}")
        solver = cls(model, data, **dict(state.settings(), **overrides))
        solver.load_state(state, settings=False)
        solver.last_checkpoint = last_checkpoint
        return solver

    # ------------------------------------------------------------------ steps
    def _to_device(self, idx):
        be = self.backend
        return (
            be.asarray(self.X_train[idx], dtype=self.model.dtype),
            be.asarray(self.y_train[idx]),
        )

    def _apply_schedule(self):
        if self.lr_schedule is None:
            return
        lr = (
            float(self.optim_config["learning_rate"])
            * self.lr_decay ** self.epoch
            * self.lr_schedule.factor(self.iteration, self.epoch)
        )
        for config in self.optim_configs.values():
            config["learning_rate"] = lr

    def _step(self, idx):
        """One gradient step on the training samples ``idx`` (host indices)."""
        xp = self.backend.xp
        X_batch, y_batch = self._to_device(idx)
        self._apply_schedule()
        if self._compiled is not None:
            self._pending_losses.append((self.iteration + 1, self._compiled(X_batch, y_batch)))
            self.model.advance_rng()
            return
        loss, grads = self.model._forward_backward(X_batch, y_batch)  # no validation; loss stays on the device
        if self.comm is not None:
            loss, grads = self._allreduce_step(loss, grads)
        health = _health(xp, loss, grads)
        self._pending_losses.append((self.iteration + 1, health))
        if self.on_nonfinite == "skip" and not bool(xp.all(xp.isfinite(health))):
            self.skipped_iterations.append(self.iteration + 1)
            self.model.advance_rng()
            return
        params = self.model.params
        for name, w in params.items():
            next_w, config = self.update_rule(w, grads[name], self.optim_configs[name])
            params[name] = next_w
            self.optim_configs[name] = config
        self.model.advance_rng()

    def _allreduce_step(self, loss, grads):
        """Average the gradients AND the loss over ranks in one flat buffer, so the
        health check, skip decisions and loss history are identical on every rank."""
        payload = dict(grads)
        payload[_LOSS_KEY] = loss
        mean = self.comm.allreduce_mean(payload, backend=self.backend)
        loss = mean.pop(_LOSS_KEY)
        return loss, mean

    def _flush_losses(self):
        """Read the losses gathered on the device since the last report (one
        transfer) and stop on a non-finite one under on_nonfinite="raise"."""
        if not self._pending_losses:
            return
        xp = self.backend.xp
        iterations = [it for it, _ in self._pending_losses]
        values = self.backend.to_numpy(xp.stack([h for _, h in self._pending_losses]))
        self._pending_losses = []
        self.loss_history.extend(float(v) for v in values[:, 0])
        if self.on_nonfinite == "raise":
            for it, (loss, grad_sum) in zip(iterations, values):
                if not (math.isfinite(loss) and math.isfinite(grad_sum)):
                    what = "loss" if not math.isfinite(loss) else "gradient"
                    where = (f"last good checkpoint: {self.last_checkpoint}" if self.last_checkpoint
                             else "no checkpoint written yet (set checkpoint_name to keep one)")
                    raise DivergenceError(
                        f"training diverged: non-finite {what} ({loss if what == 'loss' else grad_sum}) "
                        f"at iteration {it} (epoch {self.epoch + 1}); {where}. solver.best_params "
                        f"still hold the best parameters so far (val acc {self.best_val_acc:.4f}); "
                        f"try a smaller learning rate, or on_nonfinite='skip'",
                        it,
                        self.last_checkpoint,
                    )

    # ------------------------------------------------------------------ accuracy
    def check_accuracy(self, X, y, num_samples=None, batch_size=100):
        """Fraction of samples of (X, y) whose predicted label is right.

        X, y : host (or backend) arrays, (N, ...) and (N,); num_samples subsamples
        N (seeded); batches of ``batch_size`` are scored on the device and the
        predictions come back to the host once per call.
        """
        X = to_host(X, "X")
        y = check_labels_host(to_host(y, "y"), X.shape[0], self.model.num_classes, "y")
        idx = subsample(prandom.fold_in(self.seed, 1 << 20, self.epoch), X.shape[0], num_samples)
        if idx.shape[0] == 0:
            raise ValueError("X: no samples to check accuracy on")
        pred = self.model.predict(X[idx] if idx.shape[0] < X.shape[0] else X, batch_size=batch_size)
        return float((pred == y[idx]).mean())

    # ------------------------------------------------------------------ loop
    def _end_of_epoch_checks(self):
        if self.comm is not None:
            self._average_buffers()
            train_acc = self._sharded_accuracy(self.X_train, self.y_train, self.num_train_samples)
            val_acc = self._sharded_accuracy(self.X_val, self.y_val, self.num_val_samples)
        else:
            train_acc = self.check_accuracy(self.X_train, self.y_train, self.num_train_samples)
            val_acc = self.check_accuracy(self.X_val, self.y_val, self.num_val_samples)
        self.train_acc_history.append(train_acc)
        self.val_acc_history.append(val_acc)
        if val_acc > self.best_val_acc or not self.best_params:
            self.best_val_acc = val_acc
            # Update rules return new arrays, so references are a snapshot.
            self.best_params = dict(self.model.params)
            self.best_buffers = dict(self.model.buffers())

    def train(self):
        """Run the optimisation up to num_epochs epochs (from the current epoch;
        a solver restored from a checkpoint continues where it stopped).
        With a communicator: collective, call it on every rank."""
        if self.comm is None:
            return self._train()
        try:
            self._sync_from_root()
            return self._train()
        except BaseException as e:
            # DivergenceError comes from the averaged loss/gradients: every rank raises it at
            # the same step. Anything else may be one rank's: end them all rather than hang.
            if self.comm.size > 1 and not (isinstance(e, DivergenceError) or raised_on_all_ranks(e)):
                self.comm.abort_on_error(e)
            raise

    def _train(self):
        per_epoch = self.iterations_per_epoch
        n = self.X_train.shape[0]
        log = _Reporter(self)
        self.stop_training = False
        # A batchnorm model cannot score before its first step (no running statistics):
        # its first accuracies are those after epoch 1.
        untrained = getattr(self.model, "running_stats_missing", lambda: [])()
        if self.epoch == 0 and not self.val_acc_history and not untrained:
            self._end_of_epoch_checks()
            log.epoch_line()
        while self.epoch < self.num_epochs and not self.stop_training:
            perm = epoch_permutation(self.seed, self.epoch, n)
            log.start_epoch()
            for k in range(per_epoch):
                if self.comm is None:
                    self._step(perm[k * self.batch_size : (k + 1) * self.batch_size])
                else:
                    self._step(shard_batch(perm, k, self.batch_size, self.comm.rank, self.comm.size))
                self.iteration += 1
                if self.iteration % self.print_every == 0:
                    if self.verbose or self.comm is not None:  # same flush points on every rank
                        self._flush_losses()
                    log.report()
                log.advance()
                self._call("on_iteration")
                if self.comm is not None and self.callbacks:
                    # A callback on one rank may stop training: every rank must stop together.
                    self.stop_training = self.comm.allreduce_scalars([float(self.stop_training)], "max")[0] > 0
                if self.stop_training:
                    break
            self._flush_losses()
            log.end_epoch()
            if self.stop_training and k + 1 < per_epoch:
                break  # a partial epoch is not an epoch: no decay, check or checkpoint
            self.epoch += 1
            if self.lr_schedule is None:
                for config in self.optim_configs.values():
                    if "learning_rate" in config:  # update rules store their default on first use
                        config["learning_rate"] = float(config["learning_rate"]) * self.lr_decay
            self._end_of_epoch_checks()
            log.epoch_line()
            self.save_checkpoint()
            self._call("on_epoch_end")
        self._flush_losses()
        self.restore_best()
        return self

    def restore_best(self):
        """Copy the best parameters (and their batchnorm statistics) into the model."""
        if self.best_params:
            self.model.params.update(self.best_params)
            self.model.load_buffers(self.best_buffers)

    def _call(self, hook):
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(self)

    # ------------------------------------------------------------------ checkpoints
    def write_checkpoint(self, path) -> None:
        """Write this process's full training state (``state()``, model included) to
        ``path`` now, as one atomic checkpoint file (portnn.checkpoint_file). Not
        collective: ``save_checkpoint`` is what training calls."""
        arrays, meta = self.state().checkpoint_contents(self.model)
        save_arrays(path, arrays, meta)

    def save_checkpoint(self, path=None):
        """Write the full training state (``write_checkpoint``). Default path:
        ``{checkpoint_name}_epoch_{epoch}.npz``; nothing happens when neither is set.
        With a communicator: collective, rank 0 writes."""
        if path is None:
            if self.checkpoint_name is None:
                return None
            path = f"{self.checkpoint_name}_epoch_{self.epoch}.npz"
        write = Solver.write_checkpoint
        if self.comm is not None:
            # Collective: averaged statistics, rank 0 writes (its error, if any, is raised on
            # every rank), then a barrier so no rank reads the file before it is complete.
            self._flush_losses()
            if self._buffers_synced_at != self.iteration:
                self._average_buffers()
            self.comm.run_on_root(lambda: write(self, path))
            self.comm.barrier()
        else:
            write(self, path)
        self.last_checkpoint = path
        return path

    # ------------------------------------------------------------------ data parallel
    def _average_buffers(self):
        """Average batchnorm running statistics over ranks (each rank saw other data)."""
        buffers = self.model.buffers()
        if buffers:
            self.model.load_buffers(self.comm.allreduce_mean(buffers, backend=self.backend))
        self._buffers_synced_at = self.iteration

    def _sharded_accuracy(self, X, y, num_samples=None, batch_size=100):
        """check_accuracy's number, each rank scoring every size-th sample of the
        same seeded subsample; (correct, count) summed over ranks."""
        idx = subsample(prandom.fold_in(self.seed, 1 << 20, self.epoch), X.shape[0], num_samples)
        if idx.shape[0] == 0:
            raise ValueError("X: no samples to check accuracy on")
        mine = idx[self.comm.rank :: self.comm.size]
        correct = 0.0
        if mine.shape[0]:
            pred = self.model.predict(X[mine], batch_size=batch_size)
            correct = float((pred == y[mine]).sum())
        correct, count = self.comm.allreduce_scalars([correct, float(mine.shape[0])], "sum")
        return correct / count

    def _sync_from_root(self):
        """Make every rank start from rank 0's state: check that the ranks agree on
        the data and model, then broadcast rank 0's TrainingState (params, batchnorm
        statistics, optimizer state, best params, progress, skipped iterations, RNG
        position and settings such as seed and on_nonfinite): the arrays with one
        ``comm.bcast``, the JSON part with ``comm.bcast_obj``."""
        comm = self.comm
        if comm.size == 1:
            return
        self._check_ranks_agree()
        # Pending losses are the same on every rank (averaged): all ranks read them, and
        # raise on a diverged one, together, before rank 0 captures its state.
        self._flush_losses()
        state = self.state() if comm.is_root else None
        head = comm.bcast_obj(None if state is None else {
            "meta": state.meta,
            "arrays": {k: (tuple(v.shape), dtype_str(v.dtype)) for k, v in state.arrays.items()},
        })
        if comm.is_root:
            arrays = state.arrays
        else:
            xp, be = self.backend.xp, self.backend
            arrays = {k: xp.zeros(shape, dtype=be.dtype_of(dt), device=be.device)
                      for k, (shape, dt) in head["arrays"].items()}
        arrays = comm.bcast(arrays, backend=self.backend)
        if not comm.is_root:
            self.load_state(TrainingState(arrays, head["meta"]))

    def _check_ranks_agree(self):
        """Every rank must build the same model and Solver on the same data: a
        ValueError (raised on every rank) names the first difference."""
        signature = {
            "train samples": tuple(self.X_train.shape), "val samples": tuple(self.X_val.shape),
            "batch_size": self.batch_size, "num_epochs": self.num_epochs,
            "update_rule": self.update_rule_name, "dtype": float_dtype_name(self.model.dtype),
            "params": [(k, tuple(v.shape)) for k, v in sorted(self.model.params.items())],
        }
        every = self.comm.allgather_obj(signature)
        for r, sig in enumerate(every):
            diff = [k for k in sig if sig[k] != every[0][k]]
            if diff:
                k = diff[0]
                raise mark_all_ranks(ValueError(
                    f"comm: rank {r} disagrees with rank 0 on {k} ({sig[k]!r} vs {every[0][k]!r}); "
                    f"every rank must build the same model and Solver on the same data"))


def _health(xp, loss, grads):
    """stack([loss, sum of every gradient's sum]) (2,): NaN/Inf anywhere in a gradient
    makes its sum non-finite, so one cheap reduction per parameter, read back later
    together with the loss, is the whole divergence check."""
    grad_sum = None
    for g in grads.values():
        grad_sum = xp.sum(g) if grad_sum is None else grad_sum + xp.sum(g)
    return xp.stack([loss, grad_sum])


class _Program(NamedTuple):
    fn: Any  # the compiled pure step (_CompiledStep._trace_step's signature)
    statics_out: dict  # param -> {key: Python value} the update rule left in its config


class _CompiledStep:
    """Solver(compile=True): loss, gradients and update of one step as ONE compiled
    program (``Backend.compile``, i.e. jax.jit), called once per step.

    The program is pure:
      (params, buffers, states, lrs, ts, X, y, rng_step) -> (params, buffers, states, health)
      params, buffers : name -> array (the model's; batchnorm statistics)
      states : param -> {key: array}, the optimizer state (velocity, cache, m, v)
      lrs : param -> 0-d array of the model's dtype, config['learning_rate']
      ts : param -> 0-d integer array, config['t'] (for rules that keep one)
      X (B, ...), y (B,) : the batch; rng_step : 0-d integer array (dropout masks)
      health : (2,) stack([loss, sum of gradient sums]), as the eager step
    Learning rate and t stay Python numbers on the host (t + 1 per step there), so
    decay and schedules change an input, never the program. The other config
    values (momentum, beta1, epsilon, ...) are static: captured by the trace, and
    part of the key of the program cache together with the structure of the
    inputs (which state arrays exist), so every program is traced exactly once:
    a run traces 1-3 times (the first steps create optimizer state, batchnorm
    statistics and the defaults), not once per step.
    """

    def __init__(self, solver):
        self.solver = solver
        self.traces = 0  # Python traces so far (a retrace per step would show here)
        self._programs = {}

    def __call__(self, X, y):
        """One step on the device batch (X, y); installs the new state on the model
        and in solver.optim_configs; returns health (2,), still on the device."""
        s, model = self.solver, self.solver.model
        key, statics, states, lrs, ts = self._inputs()
        program = self._programs.get(key)
        if program is None:
            program = self._programs[key] = self._new_program(statics)
        rng_step = self._scalar(model.rng_step, s.backend.index_dtype, {})
        params, buffers, states, health = program.fn(
            dict(model.params), model.buffers(), states, lrs, ts, X, y, rng_step)
        model.params.update(params)  # in place, keeping the model's order, as the eager step
        model._set_buffers_unchecked(buffers)
        for name, config in s.optim_configs.items():
            config.update(program.statics_out[name])
            config.update(states[name])
            if name in ts:
                config["t"] = int(config["t"]) + 1
        return health

    def _inputs(self):
        """(cache key, statics, states, lrs, ts) from the host optimizer configs."""
        be, model = self.solver.backend, self.solver.model
        made = {}  # one device scalar per distinct value (params usually share lr and t)
        key, statics, states, lrs, ts = [], {}, {}, {}, {}
        for name, config in self.solver.optim_configs.items():
            states[name] = {k: v for k, v in config.items() if be.is_array(v)}
            statics[name] = {k: v for k, v in config.items()
                             if k not in states[name] and k not in ("learning_rate", "t")}
            if "learning_rate" in config and "learning_rate" not in states[name]:
                lrs[name] = self._scalar(float(config["learning_rate"]), model.dtype, made)
            if "t" in config and "t" not in states[name]:
                ts[name] = self._scalar(int(config["t"]), be.index_dtype, made)
            key.append((name, tuple(sorted(statics[name].items())), tuple(sorted(states[name])),
                        name in lrs, name in ts))
        key.append(tuple(sorted(model.buffers())))
        # What else the trace reads as Python values (a changed one needs a new program).
        key.append((self.solver.update_rule, model.reg, model.seed, model.rng_stream))
        return tuple(key), statics, states, lrs, ts

    def _scalar(self, value, dtype, made):
        be = self.solver.backend
        dt = be.dtype_of(dtype)
        if (value, dt) not in made:
            made[value, dt] = be.xp.asarray(value, dtype=dt, device=be.device)
        return made[value, dt]

    def _new_program(self, statics):
        statics_out = {}  # filled while tracing: Python values are fixed by the trace

        def step(params, buffers, states, lrs, ts, X, y, rng_step):
            self.traces += 1
            return self._trace_step(statics, statics_out, params, buffers, states, lrs, ts, X, y, rng_step)

        return _Program(self.solver.backend.compile(step), statics_out)

    def _trace_step(self, statics, statics_out, params, buffers, states, lrs, ts, X, y, rng_step):
        """The body of the program (runs on traced values, once per program)."""
        s, model = self.solver, self.solver.model
        params = {k: params[k] for k in model.params}  # the model's order (regularisation sums in it)
        with model._traced_state(params, buffers, rng_step):
            loss, grads = model._forward_backward(X, y)
            new_buffers = model.buffers()
        new_params, new_states = {}, {}
        for name, w in params.items():
            config = dict(statics[name], **states[name])
            traced = {}
            if name in lrs:
                traced["learning_rate"] = lrs[name]
            if name in ts:
                traced["t"] = ts[name]
            config.update(traced)
            new_params[name], config = s.update_rule(w, grads[name], config)
            arrays = {k: v for k, v in config.items() if s.backend.is_array(v)}
            new_states[name] = {k: v for k, v in arrays.items() if k not in traced}
            statics_out[name] = {k: v for k, v in config.items() if k not in arrays}
        return new_params, new_buffers, new_states, _health(s.backend.xp, loss, grads)


class _Reporter:
    """Progress output: a tqdm bar per epoch on a terminal, log lines otherwise."""

    def __init__(self, solver):
        self.s = solver
        self.bar = None
        # Under data parallelism only rank 0 prints.
        self.show = solver.verbose and (solver.comm is None or solver.comm.rank == 0)
        self.ranks = 1 if solver.comm is None else solver.comm.size
        use_bar = self.show and _stderr_is_terminal()
        self.tqdm = _import_tqdm() if use_bar else None
        self.t0 = None
        self.start = time.perf_counter()

    def start_epoch(self):
        self.t0 = time.perf_counter()
        if self.tqdm is not None:
            s = self.s
            self.bar = self.tqdm(total=s.iterations_per_epoch, desc=f"epoch {s.epoch + 1}/{s.num_epochs}",
                                 unit="step", leave=True, dynamic_ncols=True)

    def advance(self):
        if self.bar is not None:
            self.bar.update(1)

    def report(self):
        s = self.s
        if not self.show or not s.loss_history:
            return
        if self.bar is not None:
            rate = s.batch_size * self.ranks * self.bar.n / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.set_postfix(loss=f"{s.loss_history[-1]:.4f}", ex_per_s=f"{rate:.0f}")
        else:
            total = s.num_epochs * s.iterations_per_epoch
            print(f"(Iteration {s.iteration} / {total}) loss: {s.loss_history[-1]:.6f}", flush=True)

    def end_epoch(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def epoch_line(self):
        s = self.s
        if not self.show:
            return
        recent = s.loss_history[-s.iterations_per_epoch:] if s.epoch else []
        loss = f"loss: {sum(recent) / len(recent):.4f}; " if recent else ""
        print(f"(Epoch {s.epoch} / {s.num_epochs}) {loss}train acc: {s.train_acc_history[-1]:.4f}; "
              f"val_acc: {s.val_acc_history[-1]:.4f}; {time.perf_counter() - self.start:.1f}s", flush=True)


def _stderr_is_terminal():
    try:
        return os.isatty(sys.stderr.fileno())
    except (AttributeError, ValueError, OSError):
        return False


def _import_tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm
