"""The training loop: minibatches from host data, update rules, learning-rate
decay and schedules, accuracy checks, best-params tracking, progress output,
callbacks and checkpoints that resume exactly.

Host <-> device traffic is explicit and rare: one ``Backend.asarray`` per
minibatch (images and labels), loss values gathered on the device and read back
once per report (``print_every``) or epoch, and one read per accuracy check.
"""

from __future__ import annotations

import math
import os
import sys
import time

from . import optim
from . import random as prandom
from . import schedules as sched
from ._checks import check_float_in, check_positive_int
from .data.batches import check_labels_host, epoch_permutation, subsample, to_host


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
    After ``train()``: loss_history (one float per iteration), train_acc_history,
    val_acc_history (one at the start, then one per epoch), best_val_acc,
    best_params (also copied into the model, with their batchnorm statistics).
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
    ):
        self.model = model
        self.backend = model.backend
        self._set_data(data)
        if isinstance(update_rule, str):
            self.update_rule_name = update_rule
            self.update_rule = optim.get_update_rule(update_rule)
        elif callable(update_rule):
            self.update_rule_name = getattr(update_rule, "__name__", "custom")
            self.update_rule = update_rule
        else:
            raise TypeError(f"update_rule: expected a name or a callable, got {update_rule!r}")
        self.optim_config = dict(optim_config or {})
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
        self.checkpoint_name = checkpoint_name
        self.print_every = check_positive_int(print_every, "print_every")
        self.verbose = bool(verbose)
        self.seed = prandom.new_seed() if seed is None else int(seed)
        self.callbacks = list(callbacks or [])
        self.metadata = dict(metadata or {})  # saved in checkpoints (e.g. the CLI's arguments)
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"on_nonfinite: expected 'raise' or 'skip', got {on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        self._reset()

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
        self.X_train, self.y_train, self.X_val, self.y_val = X_train, y_train, X_val, y_val

    # ------------------------------------------------------------------ state
    def _reset(self):
        self.epoch = 0
        self.iteration = 0
        self.best_val_acc = 0.0
        self.best_params = {}
        self._best_buffers = {}
        self.loss_history = []
        self.train_acc_history = []
        self.val_acc_history = []
        self.optim_configs = {p: dict(self.optim_config) for p in self.model.params}
        self._pending_losses = []  # (iteration, stack([loss, sum of all grads])) on the device
        self.skipped_iterations = []
        self.stop_training = False
        self.last_checkpoint = None

    @property
    def iterations_per_epoch(self):
        return max(self.X_train.shape[0] // self.batch_size, 1)

    def current_learning_rate(self):
        """The learning rate the next step uses (first parameter's config)."""
        config = next(iter(self.optim_configs.values()), {})
        return config.get("learning_rate", self.optim_config.get("learning_rate"))

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
        loss, grads = self.model._loss_device(X_batch, y_batch)
        # NaN/Inf anywhere in a gradient makes its sum non-finite: one cheap
        # reduction per parameter, read back later together with the loss.
        grad_sum = None
        for g in grads.values():
            grad_sum = xp.sum(g) if grad_sum is None else grad_sum + xp.sum(g)
        health = xp.stack([loss, grad_sum])
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
        train_acc = self.check_accuracy(self.X_train, self.y_train, self.num_train_samples)
        val_acc = self.check_accuracy(self.X_val, self.y_val, self.num_val_samples)
        self.train_acc_history.append(train_acc)
        self.val_acc_history.append(val_acc)
        if val_acc > self.best_val_acc or not self.best_params:
            self.best_val_acc = val_acc
            # Update rules return new arrays, so references are a snapshot.
            self.best_params = dict(self.model.params)
            self._best_buffers = dict(self.model.buffers())

    def train(self):
        """Run the optimisation up to num_epochs epochs (from the current epoch;
        a solver restored from a checkpoint continues where it stopped)."""
        per_epoch = self.iterations_per_epoch
        n = self.X_train.shape[0]
        log = _Reporter(self)
        self.stop_training = False
        if self.epoch == 0 and not self.val_acc_history:
            self._end_of_epoch_checks()
            log.epoch_line()
        while self.epoch < self.num_epochs and not self.stop_training:
            perm = epoch_permutation(self.seed, self.epoch, n)
            log.start_epoch()
            for k in range(per_epoch):
                self._step(perm[k * self.batch_size : (k + 1) * self.batch_size])
                self.iteration += 1
                if self.iteration % self.print_every == 0:
                    if self.verbose:
                        self._flush_losses()
                    log.report()
                log.advance()
                self._call("on_iteration")
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
            self.model.load_buffers(self._best_buffers)

    def _call(self, hook):
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(self)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path=None):
        """Write the full training state (see portnn.io). Default path:
        ``{checkpoint_name}_epoch_{epoch}.npz``; nothing happens when neither is set."""
        if path is None:
            if self.checkpoint_name is None:
                return None
            path = f"{self.checkpoint_name}_epoch_{self.epoch}.npz"
        from .io import save

        save(self, path)
        self.last_checkpoint = path
        return path


class _Reporter:
    """Progress output: a tqdm bar per epoch on a terminal, log lines otherwise."""

    def __init__(self, solver):
        self.s = solver
        self.bar = None
        use_bar = solver.verbose and _stderr_is_terminal()
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
        if not s.verbose or not s.loss_history:
            return
        if self.bar is not None:
            rate = s.batch_size * self.bar.n / max(time.perf_counter() - self.t0, 1e-9)
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
        if not s.verbose:
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
