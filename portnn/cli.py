"""Command-line entry point: ``portnn train ...`` / ``python -m portnn train ...``."""

from __future__ import annotations

import argparse
import sys
import time


def _build_parser():
    p = argparse.ArgumentParser(prog="portnn", description="portnn: train small networks on any array backend.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train",
        help="train a network and report per-epoch loss/accuracy and the final test accuracy",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    t.add_argument("--backend", default=None,
                   help="numpy | torch | cupy | array_api_strict (optionally name:device); "
                        "default: $PORTNN_BACKEND or numpy")
    t.add_argument("--model", choices=["fcn", "cnn"], default="fcn",
                   help="fcn = FullyConnectedNet, cnn = ThreeLayerConvNet")
    t.add_argument("--dataset", choices=["digits", "cifar10"], default="digits",
                   help="digits is bundled (8x8, 10 classes); cifar10 needs --data-dir")
    t.add_argument("--data-dir", default=None,
                   help="folder with the CIFAR-10 python batches (cifar-10-batches-py)")
    t.add_argument("--num-train", type=int, default=None,
                   help="cifar10: training images (default 49000)")
    t.add_argument("--num-val", type=int, default=None,
                   help="cifar10: validation images, taken from the end of the training batches "
                        "(default 1000)")
    t.add_argument("--num-test", type=int, default=None,
                   help="cifar10: test images from test_batch (default 1000)")
    t.add_argument("--hidden-dims", type=int, nargs="+", default=[100, 100],
                   help="hidden layer sizes of the fcn")
    t.add_argument("--normalization", choices=["none", "batchnorm", "layernorm"], default="none")
    t.add_argument("--dropout", type=float, default=0.0,
                   help="probability of DROPPING a hidden unit (0 = no dropout); "
                        "the models' dropout_keep_ratio is 1 - this")
    t.add_argument("--num-filters", type=int, default=32, help="cnn: number of conv filters")
    t.add_argument("--filter-size", type=int, default=3, help="cnn: conv filter size")
    t.add_argument("--hidden-dim", type=int, default=100, help="cnn: hidden affine layer size")
    t.add_argument("--update-rule", choices=["sgd", "sgd_momentum", "rmsprop", "adam"], default="adam")
    t.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: 5e-3 on digits, 1e-3 on cifar10)")
    t.add_argument("--lr-decay", type=float, default=0.95, help="learning-rate factor per epoch")
    t.add_argument("--reg", type=float, default=1e-4, help="L2 regularisation strength")
    t.add_argument("--weight-scale", type=float, default=None,
                   help="std of initial weights (default on digits: 0.1 fcn, 0.05 cnn; "
                        "on cifar10, whose pixels are 0..255 minus the mean: 1e-3)")
    t.add_argument("--epochs", type=int, default=15)
    t.add_argument("--batch-size", type=int, default=50)
    t.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    t.add_argument("--seed", type=int, default=0, help="seeds init, dropout and batch order")
    t.add_argument("--checkpoint", default=None,
                   help="write PREFIX_epoch_E.npz (+ .json) checkpoints after every epoch")
    t.add_argument("--quiet", action="store_true", help="print only the final summary")
    return p


def _load_data(args):
    from .data import load_cifar10, load_digits

    cnn = args.model == "cnn"
    if args.dataset == "digits":
        return load_digits(dtype=args.dtype, flatten=not cnn)
    if not args.data_dir:
        raise SystemExit("portnn train: --dataset cifar10 needs --data-dir DIR (the cifar-10-batches-py folder)")
    sizes = {}
    if args.num_train is not None:
        sizes["num_training"] = args.num_train
    if args.num_val is not None:
        sizes["num_validation"] = args.num_val
    if args.num_test is not None:
        sizes["num_test"] = args.num_test
    data = load_cifar10(args.data_dir, dtype=args.dtype, **sizes)
    if not cnn:
        for k in ("X_train", "X_val", "X_test"):
            data[k] = data[k].reshape(data[k].shape[0], -1)
    return data


def _weight_scale(args, digits_default):
    if args.weight_scale is not None:
        return args.weight_scale
    return digits_default if args.dataset == "digits" else 1e-3


def _build_model(args, data):
    from .models import FullyConnectedNet, ThreeLayerConvNet

    num_classes = int(data["y_train"].max()) + 1
    if args.model == "cnn":
        return ThreeLayerConvNet(
            input_dim=tuple(data["X_train"].shape[1:]),
            num_filters=args.num_filters,
            filter_size=args.filter_size,
            hidden_dim=args.hidden_dim,
            num_classes=num_classes,
            weight_scale=_weight_scale(args, 0.05),
            reg=args.reg,
            dtype=args.dtype,
            seed=args.seed,
            backend=args.backend,
        )
    return FullyConnectedNet(
        args.hidden_dims,
        input_dim=int(data["X_train"].shape[1]),
        num_classes=num_classes,
        dropout_keep_ratio=1.0 - args.dropout,
        normalization=None if args.normalization == "none" else args.normalization,
        reg=args.reg,
        weight_scale=_weight_scale(args, 0.1),
        dtype=args.dtype,
        seed=args.seed,
        backend=args.backend,
    )


class _EpochPrinter:
    def __init__(self, quiet):
        self.quiet = quiet
        self.t0 = time.perf_counter()
        self.seen = 0

    def on_epoch_end(self, solver):
        if self.quiet:
            return
        per = solver.iterations_per_epoch
        recent = solver.loss_history[-per:]
        print(
            f"epoch {solver.epoch:3d}/{solver.num_epochs}  loss {sum(recent) / len(recent):.4f}  "
            f"train acc {solver.train_acc_history[-1]:.4f}  val acc {solver.val_acc_history[-1]:.4f}  "
            f"({time.perf_counter() - self.t0:.1f}s)",
            flush=True,
        )


def cmd_train(args):
    from .backends import BackendError, get_backend
    from .solver import Solver

    try:
        backend = get_backend(args.backend)
    except BackendError as e:
        raise SystemExit(f"portnn train: {e}") from None
    try:
        data = _load_data(args)
    except (OSError, ValueError) as e:  # missing folder, damaged or unsafe files
        raise SystemExit(f"portnn train: {e}") from None
    model = _build_model(args, data)
    lr = args.lr if args.lr is not None else (5e-3 if args.dataset == "digits" else 1e-3)
    if not args.quiet:
        n = data["X_train"].shape[0]
        print(
            f"portnn: {args.model} on {args.dataset} ({n} train / {data['X_val'].shape[0]} val / "
            f"{data['X_test'].shape[0]} test), backend {backend.name} ({backend.device}), {args.dtype}"
        )
    solver = Solver(
        model,
        data,
        update_rule=args.update_rule,
        optim_config={"learning_rate": lr},
        lr_decay=args.lr_decay,
        batch_size=args.batch_size,
        num_epochs=args.epochs,
        num_train_samples=None,
        checkpoint_name=args.checkpoint,
        verbose=False,
        seed=args.seed,
        callbacks=[_EpochPrinter(args.quiet)],
    )
    t0 = time.perf_counter()
    solver.train()
    elapsed = time.perf_counter() - t0
    test_acc = solver.check_accuracy(data["X_test"], data["y_test"])
    print(
        f"best val acc {solver.best_val_acc:.4f}  test acc {test_acc:.4f}  "
        f"({elapsed:.1f}s training, {solver.iteration} iterations)"
    )
    return 0


def main(argv=None):
    args = _build_parser().parse_args(argv)
    if args.command == "train":
        return cmd_train(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
