"""Learning-rate schedules and callbacks: warm-up + cosine decay, a learning-rate log,
and early stopping.

A schedule (``portnn.schedules``) multiplies the base learning rate by
``factor(iteration, epoch)``: here ``LinearWarmup(W, then=CosineDecay(T))``
ramps up over W steps, then follows half a cosine down to 1% over T steps.
``StepDecay(step_epochs, gamma)`` is the other built-in. A callback is any
object with ``on_iteration(solver)`` and/or ``on_epoch_end(solver)``; setting
``solver.stop_training = True`` ends training (after the current step). The
Solver then restores the weights of the best validation epoch.

Run:

    python examples/08_schedules_callbacks.py                 # numpy, up to 30 epochs, stops early
    python examples/08_schedules_callbacks.py --backend torch
    python examples/08_schedules_callbacks.py --patience 5 --epochs 50
    python examples/08_schedules_callbacks.py --quick         # smoke test

Expected output (numpy, defaults):

    schedule: linear warm-up over 46 steps, then cosine decay to 1% over 644 steps
    learning rate at iteration 0: 1.09e-04, iteration 23: 2.61e-03, iteration 45: 5.00e-03, iteration 368: 2.52e-03, iteration 689: 5.00e-05
    epoch  1  lr 2.50e-03  val acc 0.800
    epoch  2  lr 5.00e-03  val acc 0.927
    epoch  3  lr 4.99e-03  val acc 0.973
    epoch  4  lr 4.94e-03  val acc 0.977
    epoch  5  lr 4.87e-03  val acc 0.980
    epoch  6  lr 4.76e-03  val acc 0.980
    epoch  7  lr 4.63e-03  val acc 0.980
    epoch  8  lr 4.47e-03  val acc 0.980
    early stop: no val-acc gain for 3 epoch(s); stopped after epoch 8 of 30 (best val acc 0.980 at epoch 5)
    learning rates used: 184 steps, first 1.09e-04, peak 5.00e-03, last 4.47e-03
    test acc 0.980 with the restored best weights
"""

import argparse

import portnn
from portnn import schedules
from portnn.data import load_digits


class LearningRateLog:
    """Records the learning rate of every step (the Solver sets it before each step)."""

    def __init__(self):
        self.rates = []

    def on_iteration(self, solver):
        self.rates.append(solver.current_learning_rate())


class EarlyStopping:
    """Stop when validation accuracy has not improved for ``patience`` epochs."""

    def __init__(self, patience=3, min_delta=0.0):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.best_epoch, self.stopped_at = -1.0, 0, None

    def on_epoch_end(self, solver):
        val = solver.val_acc_history[-1]
        print(f"epoch {solver.epoch:2d}  lr {solver.current_learning_rate():.2e}  val acc {val:.3f}")
        if val > self.best + self.min_delta:
            self.best, self.best_epoch = val, solver.epoch
        elif solver.epoch - self.best_epoch >= self.patience:
            self.stopped_at = solver.epoch
            solver.stop_training = True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", help="numpy | torch | array_api_strict | cupy[:N]")
    ap.add_argument("--epochs", type=int, default=30, help="at most this many epochs")
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--lr", type=float, default=5e-3, help="base (peak) learning rate")
    ap.add_argument("--quick", action="store_true", help="300 training images, patience 1 (smoke test)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    portnn.backends.enable_64bit(args.backend)  # a program may: JAX needs it for float64 / dropout

    data = load_digits()
    if args.quick:
        data["X_train"], data["y_train"] = data["X_train"][:300], data["y_train"][:300]
        args.patience = 1
    batch_size = 50
    per_epoch = max(data["X_train"].shape[0] // batch_size, 1)

    # Warm up over the first two epochs, then decay over the rest of the planned epochs.
    total, warmup = per_epoch * args.epochs, per_epoch * 2
    schedule = schedules.LinearWarmup(warmup, then=schedules.CosineDecay(
        total_iterations=total - warmup, final_factor=0.01))
    print(f"schedule: linear warm-up over {warmup} steps, then cosine decay to 1% over {total - warmup} steps")
    probes = [0, warmup // 2, warmup - 1, (warmup + total) // 2, total - 1]
    print("learning rate at " + ", ".join(
        f"iteration {i}: {args.lr * schedule.factor(i, 0):.2e}" for i in probes))

    lr_log, early = LearningRateLog(), EarlyStopping(patience=args.patience)
    model = portnn.FullyConnectedNet([100, 100], input_dim=64, normalization="batchnorm",
                                     weight_scale=0.1, reg=1e-4, seed=args.seed, backend=args.backend)
    solver = portnn.Solver(model, data, update_rule="adam", optim_config={"learning_rate": args.lr},
                           lr_schedule=schedule, batch_size=batch_size, num_epochs=args.epochs,
                           seed=args.seed, callbacks=[lr_log, early], verbose=False)
    solver.train()

    if early.stopped_at is not None:
        print(f"early stop: no val-acc gain for {args.patience} epoch(s); stopped after epoch "
              f"{early.stopped_at} of {args.epochs} (best val acc {early.best:.3f} at epoch {early.best_epoch})")
    else:
        print(f"ran all {args.epochs} epochs (best val acc {early.best:.3f} at epoch {early.best_epoch})")
    r = lr_log.rates
    print(f"learning rates used: {len(r)} steps, first {r[0]:.2e}, peak {max(r):.2e}, last {r[-1]:.2e}")
    test_acc = solver.check_accuracy(data["X_test"], data["y_test"])
    print(f"test acc {test_acc:.3f} with the restored best weights")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
