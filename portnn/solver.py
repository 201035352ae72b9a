"""The training loop: minibatches from host data, update rules, lr decay,
accuracy checks, best-params tracking and checkpoints.

Host <-> device traffic is explicit and rare: one ``Backend.asarray`` per
minibatch (images and labels), loss values gathered on the device and read back
once per report (``print_every``) or epoch, and one read per accuracy check.
"""

from __future__ import annotations

import math

from . import optim
from . import random as prandom
from ._checks import check_float_in, check_positive_int
from .data.batches import check_labels_host, epoch_permutation, subsample, to_host
from .io import save_arrays


class Solver:
    """Trains a model (anything with ``.params``, ``.backend``, ``.num_classes`` and
    ``_loss_device(X, y)``) on classification data.

    data : dict with 'X_train' (N, ...), 'y_train' (N,), 'X_val', 'y_val'; NumPy
        arrays on the host are fine (arrays of the model's backend also work).
    update_rule : "sgd" | "sgd_momentum" | "rmsprop" | "adam" or a callable
        (w, dw, config) -> (next_w, config).
    optim_config : hyper-parameters given to the update rule (each parameter gets
        its own copy, which then holds that parameter's optimizer state).
    lr_decay : learning_rate is multiplied by this after every epoch.
    seed : minibatch order and accuracy subsampling; None draws a fresh seed.
    callbacks : objects with optional ``on_iteration(solver)`` and
        ``on_epoch_end(solver)`` methods, called after each step / epoch.
    After ``train()``: loss_history (one float per iteration), train_acc_history,
    val_acc_history (one per epoch, plus one at the start), best_val_acc, and
    best_params (also copied into the model).
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
    ):
        self.model = model
        self.backend = model.backend
        for key in ("X_train", "y_train", "X_val", "y_val"):
            if key not in data:
                raise ValueError(f"data: missing key {key!r} (need X_train, y_train, X_val, y_val)")
        self.X_train = to_host(data["X_train"], "data['X_train']")
        self.X_val = to_host(data["X_val"], "data['X_val']")
        C = model.num_classes
        self.y_train = check_labels_host(
            to_host(data["y_train"], "data['y_train']"), self.X_train.shape[0], C, "data['y_train']"
        )
        self.y_val = check_labels_host(
            to_host(data["y_val"], "data['y_val']"), self.X_val.shape[0], C, "data['y_val']"
        )
        if self.X_train.shape[0] == 0:
            raise ValueError("data['X_train']: expected at least one training sample, got 0")

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
        self.lr_decay = check_float_in(lr_decay, "lr_decay", 0.0, math.inf)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.num_epochs = check_positive_int(num_epochs, "num_epochs", minimum=0)
        self.num_train_samples = num_train_samples
        self.num_val_samples = num_val_samples
        self.checkpoint_name = checkpoint_name
        self.print_every = check_positive_int(print_every, "print_every")
        self.verbose = verbose
        self.seed = prandom.new_seed() if seed is None else int(seed)
        self.callbacks = list(callbacks or [])
        self._reset()

    # ------------------------------------------------------------------ state
    def _reset(self):
        self.epoch = 0
        self.iteration = 0
        self.best_val_acc = 0.0
        self.best_params = {}
        self.loss_history = []
        self.train_acc_history = []
        self.val_acc_history = []
        self.optim_configs = {p: dict(self.optim_config) for p in self.model.params}
        self._pending_losses = []

    @property
    def iterations_per_epoch(self):
        return max(self.X_train.shape[0] // self.batch_size, 1)

    # ------------------------------------------------------------------ steps
    def _to_device(self, idx):
        be = self.backend
        return (
            be.asarray(self.X_train[idx], dtype=self.model.dtype),
            be.asarray(self.y_train[idx]),
        )

    def _step(self, idx):
        """One gradient step on the training samples ``idx`` (host indices)."""
        X_batch, y_batch = self._to_device(idx)
        loss, grads = self.model._loss_device(X_batch, y_batch)
        self._pending_losses.append(loss)
        params = self.model.params
        for name, w in params.items():
            next_w, config = self.update_rule(w, grads[name], self.optim_configs[name])
            params[name] = next_w
            self.optim_configs[name] = config
        self.model.advance_rng()

    def _flush_losses(self):
        """Read the losses gathered on the device since the last report: one transfer."""
        if not self._pending_losses:
            return
        xp = self.backend.xp
        values = self.backend.to_numpy(xp.stack(self._pending_losses))
        self.loss_history.extend(float(v) for v in values)
        self._pending_losses = []

    # ------------------------------------------------------------------ accuracy
    def check_accuracy(self, X, y, num_samples=None, batch_size=100):
        """Fraction of samples of (X, y) whose argmax score is the label.

        X, y : host (or backend) arrays, (N, ...) and (N,); num_samples subsamples
        N (seeded); batches of ``batch_size`` are scored on the device and the
        correct count is read back once per call.
        """
        X = to_host(X, "X")
        y = check_labels_host(to_host(y, "y"), X.shape[0], self.model.num_classes, "y")
        check_positive_int(batch_size, "batch_size")
        idx = subsample(prandom.fold_in(self.seed, 1 << 20, self.epoch), X.shape[0], num_samples)
        if idx.shape[0] == 0:
            raise ValueError("X: no samples to check accuracy on")
        be, xp = self.backend, self.backend.xp
        correct = None
        for start in range(0, idx.shape[0], batch_size):
            sel = idx[start : start + batch_size]
            scores = self.model._loss_device(be.asarray(X[sel], dtype=self.model.dtype), None)
            hits = xp.sum(xp.astype(xp.argmax(scores, axis=1) == be.asarray(y[sel]), xp.int64))
            correct = hits if correct is None else correct + hits
        return int(correct) / idx.shape[0]

    # ------------------------------------------------------------------ loop
    def _end_of_epoch_checks(self):
        train_acc = self.check_accuracy(self.X_train, self.y_train, self.num_train_samples)
        val_acc = self.check_accuracy(self.X_val, self.y_val, self.num_val_samples)
        self.train_acc_history.append(train_acc)
        self.val_acc_history.append(val_acc)
        if self.verbose:
            print(f"(Epoch {self.epoch} / {self.num_epochs}) train acc: {train_acc:.4f}; val_acc: {val_acc:.4f}")
        if val_acc > self.best_val_acc or not self.best_params:
            self.best_val_acc = val_acc
            # Update rules return new arrays, so references are a snapshot.
            self.best_params = dict(self.model.params)
            self._best_buffers = dict(self.model.buffers())

    def train(self):
        """Run the optimisation for num_epochs epochs (from the current epoch)."""
        per_epoch = self.iterations_per_epoch
        n = self.X_train.shape[0]
        if self.epoch == 0 and not self.val_acc_history:
            self._end_of_epoch_checks()
        while self.epoch < self.num_epochs:
            perm = epoch_permutation(self.seed, self.epoch, n)
            for k in range(per_epoch):
                self._step(perm[k * self.batch_size : (k + 1) * self.batch_size])
                self.iteration += 1
                self._call("on_iteration")
                if self.verbose and self.iteration % self.print_every == 0:
                    self._flush_losses()
                    total = self.num_epochs * per_epoch
                    print(f"(Iteration {self.iteration} / {total}) loss: {self.loss_history[-1]:.6f}")
            self._flush_losses()
            self.epoch += 1
            for config in self.optim_configs.values():
                if "learning_rate" in config:  # update rules store their default on first use
                    config["learning_rate"] = float(config["learning_rate"]) * self.lr_decay
            self._end_of_epoch_checks()
            self._save_checkpoint()
            self._call("on_epoch_end")
        # Keep the best parameters (and their batchnorm statistics) in the model.
        if self.best_params:
            self.model.params.update(self.best_params)
            self.model.load_buffers(getattr(self, "_best_buffers", {}))
        return self

    def _call(self, hook):
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(self)

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self):
        if self.checkpoint_name is None:
            return
        be = self.backend
        arrays = {f"model.{k}": be.to_numpy(v) for k, v in self.model.state_dict().items()}
        scalars = {}
        for p, config in self.optim_configs.items():
            for key, value in config.items():
                if hasattr(value, "shape"):
                    arrays[f"optim.{p}.{key}"] = be.to_numpy(value)
                else:
                    scalars[f"{p}.{key}"] = value
        meta = {
            "kind": "solver",
            "epoch": self.epoch,
            "iteration": self.iteration,
            "update_rule": self.update_rule_name,
            "batch_size": self.batch_size,
            "lr_decay": self.lr_decay,
            "seed": self.seed,
            "rng_step": self.model.rng_step,
            "optim_scalars": scalars,
            "loss_history": self.loss_history,
            "train_acc_history": self.train_acc_history,
            "val_acc_history": self.val_acc_history,
            "best_val_acc": self.best_val_acc,
        }
        save_arrays(f"{self.checkpoint_name}_epoch_{self.epoch}.npz", arrays, meta)
