"""Training a FullyConnectedNet on the bundled digits: update rules and normalisation compared.

Two small experiments on the 8x8 handwritten digits that ship with portnn
(1,197 train / 300 val / 300 test images, 64 pixels each):

1. the same net [100, 100] trained with sgd, sgd_momentum, rmsprop and adam
   (each with a learning rate that suits it);
2. adam with a plain net, batchnorm, layernorm, and dropout (keep ratio 0.8).

Every run uses the same seed, so the initial weights and the minibatch order are
the same: the table shows the effect of the one thing changed. The Solver picks
the epoch with the best validation accuracy and restores those weights; "test"
is measured with them.

Run:

    python examples/03_fcn_digits.py                   # numpy, 10 epochs, ~5 s
    python examples/03_fcn_digits.py --backend torch
    python examples/03_fcn_digits.py --quick           # 2 epochs, for a smoke test
    python examples/03_fcn_digits.py --epochs 20 --only norms

Expected output (numpy, default settings; torch gives the same table, timings aside):

    FullyConnectedNet [100, 100] on digits (1197 train / 300 val / 300 test), backend numpy, float32, 10 epochs
    | experiment              | train acc | best val acc | test acc | time |
    |-------------------------|-----------|--------------|----------|------|
    | sgd, lr 0.1             |     0.939 |        0.900 |    0.913 | 0.3s |
    | sgd_momentum, lr 0.05   |     0.995 |        0.967 |    0.970 | 0.2s |
    | rmsprop, lr 0.001       |     0.996 |        0.970 |    0.977 | 0.2s |
    | adam, lr 0.005          |     1.000 |        0.977 |    0.987 | 0.3s |
    | adam + plain            |     1.000 |        0.977 |    0.987 | 0.3s |
    | adam + batchnorm        |     1.000 |        0.983 |    0.983 | 0.5s |
    | adam + layernorm        |     1.000 |        0.973 |    0.980 | 0.6s |
    | adam + dropout 0.2      |     1.000 |        0.970 |    0.987 | 0.5s |
    best: adam, lr 0.005, test acc 0.987

("adam, lr 0.005" and "adam + plain" are the same run, trained once.)
"""

import argparse
import time

import portnn
from portnn.data import load_digits

# Learning rates that suit each rule on this data (try others with --lr-scale).
UPDATE_RULES = [("sgd", 1e-1), ("sgd_momentum", 5e-2), ("rmsprop", 1e-3), ("adam", 5e-3)]
# (label, normalization, dropout_keep_ratio): dropout_keep_ratio is the probability
# of KEEPING a unit, so 0.8 drops 20%.
VARIANTS = [("plain", None, 1.0), ("batchnorm", "batchnorm", 1.0), ("layernorm", "layernorm", 1.0),
            ("dropout 0.2", None, 0.8)]


def train_one(data, backend, dtype, epochs, seed, update_rule, lr, normalization=None, keep=1.0):
    model = portnn.FullyConnectedNet(
        [100, 100], input_dim=64, num_classes=10,
        normalization=normalization, dropout_keep_ratio=keep,
        weight_scale=0.1, reg=1e-4, dtype=dtype, seed=seed, backend=backend,
    )
    solver = portnn.Solver(
        model, data, update_rule=update_rule, optim_config={"learning_rate": lr},
        lr_decay=0.95, batch_size=50, num_epochs=epochs, num_train_samples=None,
        seed=seed, verbose=False,
    )
    t0 = time.perf_counter()
    solver.train()
    seconds = time.perf_counter() - t0
    test_acc = solver.check_accuracy(data["X_test"], data["y_test"])
    return solver.train_acc_history[-1], solver.best_val_acc, test_acc, seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", help="numpy | torch | array_api_strict | cupy[:N]")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="2 epochs (a smoke test)")
    ap.add_argument("--only", choices=["rules", "norms"], default=None, help="run one experiment")
    ap.add_argument("--lr-scale", type=float, default=1.0, help="multiply every learning rate")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    portnn.backends.enable_64bit(args.backend)  # a program may: JAX needs it for float64 / dropout
    epochs = 2 if args.quick else args.epochs

    backend = portnn.get_backend(args.backend)  # fails here, with the reason, if unusable
    data = load_digits(dtype=args.dtype)        # host NumPy; the Solver moves each minibatch
    sizes = " / ".join(f"{data['X_' + s].shape[0]} {s}" for s in ("train", "val", "test"))
    print(f"FullyConnectedNet [100, 100] on digits ({sizes}), backend {backend.name}, "
          f"{args.dtype}, {epochs} epochs")

    runs = []
    if args.only in (None, "rules"):
        for rule, lr in UPDATE_RULES:
            runs.append((f"{rule}, lr {lr * args.lr_scale:g}", dict(update_rule=rule, lr=lr * args.lr_scale)))
    if args.only in (None, "norms"):
        rule, lr = UPDATE_RULES[-1]
        for label, norm, keep in VARIANTS:
            kw = dict(update_rule=rule, lr=lr * args.lr_scale)
            if norm is not None or keep != 1.0:
                kw.update(normalization=norm, keep=keep)
            runs.append((f"adam + {label}", kw))

    print(f"| {'experiment':<23} | train acc | best val acc | test acc | time |")
    print(f"|{'-' * 25}|-----------|--------------|----------|------|")
    results, done = [], {}
    for label, kw in runs:
        key = tuple(sorted(kw.items()))
        if key not in done:  # "adam" and "adam + plain" are the same run: train it once
            done[key] = train_one(data, backend, args.dtype, epochs, args.seed, **kw)
        train_acc, val_acc, test_acc, seconds = done[key]
        results.append((test_acc, label))
        print(f"| {label:<23} | {train_acc:9.3f} | {val_acc:12.3f} | {test_acc:8.3f} | {seconds:.1f}s |", flush=True)
    best_acc, best_label = max(results)
    print(f"best: {best_label}, test acc {best_acc:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
