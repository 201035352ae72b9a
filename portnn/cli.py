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
    t.add_argument("--epochs", type=int, default=None,
                   help="epochs to train (default 15; with --resume, the checkpoint's)")
    t.add_argument("--batch-size", type=int, default=50)
    t.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    t.add_argument("--seed", type=int, default=0, help="seeds init, dropout and batch order")
    t.add_argument("--schedule", choices=["none", "step", "cosine"], default="none",
                   help="learning-rate schedule on top of --lr-decay")
    t.add_argument("--warmup", type=int, default=0, help="linear warm-up iterations before the schedule")
    t.add_argument("--step-epochs", type=int, default=5, help="step schedule: epochs between decays")
    t.add_argument("--step-gamma", type=float, default=0.5, help="step schedule: factor per step")
    t.add_argument("--checkpoint", default=None, metavar="PREFIX",
                   help="write PREFIX_epoch_E.npz (+ .json) checkpoints after every epoch")
    t.add_argument("--resume", default=None, metavar="CKPT",
                   help="continue the run saved in CKPT (a PREFIX_epoch_E.npz): model, data and "
                        "optimisation options come from the checkpoint; --epochs may extend it")
    t.add_argument("--plot", default=None, metavar="PNG",
                   help="write loss / accuracy curves and first-layer weights to this PNG "
                        "(needs matplotlib: pip install 'portnn[plot]')")
    t.add_argument("--save", default=None, metavar="PATH", help="save the final (best) model to PATH")
    t.add_argument("--print-every", type=int, default=None, help="log the loss every N iterations")
    t.add_argument("--quiet", action="store_true", help="print only the final summary")
    t.add_argument("--distributed", choices=["auto", "none", "mpi", "nccl"], default="auto",
                   help="data-parallel training over several processes: run 'mpiexec -n N portnn train ...' "
                        "(pip install 'portnn[mpi]'). auto = MPI when started by mpiexec with N > 1, "
                        "else one process; nccl = NCCL between GPUs (cupy backend). --batch-size is per "
                        "process (a step sees N x batch-size samples); only rank 0 prints and writes files")

    e = sub.add_parser("eval", help="accuracy of a saved model or checkpoint on a dataset's val/test split",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("checkpoint", help="a file written by --save, --checkpoint or portnn.save")
    e.add_argument("--dataset", choices=["digits", "cifar10"], default="digits")
    e.add_argument("--data-dir", default=None, help="cifar10: the cifar-10-batches-py folder")
    e.add_argument("--backend", default=None, help="backend to evaluate on (default: numpy)")
    e.add_argument("--batch-size", type=int, default=500)
    e.add_argument("--dtype", choices=["float32", "float64"], default=None,
                   help="dtype of the data (default: the model's)")
    for name in ("--num-train", "--num-val", "--num-test"):
        e.add_argument(name, type=int, default=None, help="cifar10 split sizes, as for train")

    sub.add_parser("selftest", help="check every layer, model and optimizer on a backend against numpy "
                                    "(portnn selftest --help)", add_help=False)
    return p


def _load_data(args):
    from .data import load_cifar10, load_digits

    cnn = args.model == "cnn"
    if args.dataset == "digits":
        return load_digits(dtype=args.dtype, flatten=not cnn)
    if not args.data_dir:
        raise SystemExit("portnn: --dataset cifar10 needs --data-dir DIR (the cifar-10-batches-py folder)")
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


def _schedule(args, iterations_per_epoch):
    from . import schedules

    total = args.epochs * iterations_per_epoch
    if args.schedule == "cosine":
        main = schedules.CosineDecay(max(1, total - args.warmup), final_factor=0.01)
    elif args.schedule == "step":
        main = schedules.StepDecay(args.step_epochs, args.step_gamma)
    else:
        main = None
    if args.warmup:
        return schedules.LinearWarmup(args.warmup, then=main)
    return main


# Options that describe the run (model, data, optimisation); a resumed run takes them
# from the checkpoint so it continues exactly the same training.
_RUN_OPTIONS = (
    "model", "dataset", "data_dir", "num_train", "num_val", "num_test", "hidden_dims", "normalization",
    "dropout", "num_filters", "filter_size", "hidden_dim", "update_rule", "lr", "lr_decay", "reg",
    "weight_scale", "batch_size", "dtype", "seed", "schedule", "warmup", "step_epochs", "step_gamma",
)


def _fail(command, e):
    from .distributed import mark_all_ranks, raised_on_all_ranks

    exit_ = SystemExit(f"portnn {command}: {e}")
    handling = sys.exc_info()[1]  # the error being reported, when called from an except clause
    if any(isinstance(x, BaseException) and raised_on_all_ranks(x) for x in (e, handling)):
        mark_all_ranks(exit_)  # every rank fails the same way: no abort needed
    raise exit_


def _communicator(args):
    from .distributed import create_communicator

    if args.distributed == "none":
        return None
    try:
        comm = create_communicator(args.distributed)
    except (ImportError, RuntimeError, ValueError) as e:
        _fail("train", f"--distributed {args.distributed}: {e}")
    return comm if comm.size > 1 else None


def cmd_train(args):
    from .distributed import raised_on_all_ranks
    from .solver import DivergenceError

    comm = _communicator(args)
    if comm is None:
        return _cmd_train(args, None)
    try:
        return _cmd_train(args, comm)
    except BaseException as e:
        if isinstance(e, DivergenceError) or raised_on_all_ranks(e):
            if comm.is_root:  # every rank has the same error: rank 0 reports it, all exit
                raise
            raise SystemExit(1) from None
        if isinstance(e, SystemExit):
            if e.code in (0, None):
                raise
            print(f"rank {comm.rank}/{comm.size}: {e.code}", file=sys.stderr, flush=True)
            comm.abort(e.code if isinstance(e.code, int) else 1)
        comm.abort_on_error(e, 1)  # one rank failed: end all of them, never hang
        raise


def _cmd_train(args, comm):
    from . import io
    from .backends import BackendError, get_backend
    from .solver import Solver

    root = comm is None or comm.is_root
    if comm is not None and (args.backend or "").split(":")[0] == "cupy" and ":" not in args.backend:
        args.backend = f"cupy:{comm.local_rank}"  # one GPU per process on each node
    try:
        backend = get_backend(args.backend)
    except BackendError as e:
        _fail("train", e)
    resumed_meta = None
    if args.resume:
        try:
            if comm is None:
                _, meta = io.load_arrays(args.resume)
            else:  # only rank 0 needs to see the file
                meta = comm.run_on_root(lambda: io.load_arrays(args.resume)[1])
            resumed_meta = meta["solver"]
            saved = resumed_meta["metadata"]["cli"]
        except (OSError, ValueError, KeyError) as e:
            _fail("train", f"--resume {args.resume}: not a checkpoint written by 'portnn train' ({e})")
        for key in _RUN_OPTIONS:
            setattr(args, key, saved[key])
        if args.epochs is None:
            args.epochs = resumed_meta["num_epochs"]
        if args.checkpoint is None:
            args.checkpoint = resumed_meta["checkpoint_name"]
    if args.epochs is None:
        args.epochs = 15
    try:
        data = _load_data(args)
    except (OSError, ValueError) as e:  # missing folder, damaged or unsafe files
        _fail("train", e)
    if args.lr is None:
        args.lr = 5e-3 if args.dataset == "digits" else 1e-3
    verbose = not args.quiet
    if verbose and root:
        n = data["X_train"].shape[0]
        print(
            f"portnn: {args.model} on {args.dataset} ({n} train / {data['X_val'].shape[0]} val / "
            f"{data['X_test'].shape[0]} test), backend {backend.name} ({backend.device}), {args.dtype}"
            + (f", resuming {args.resume} at epoch {resumed_meta['epoch']}" if args.resume else "")
            + (f", {comm.size} processes ({comm.name}), batch {args.batch_size} per process"
               if comm is not None else "")
        )
    settings = dict(num_epochs=args.epochs, checkpoint_name=args.checkpoint, verbose=verbose,
                    print_every=args.print_every or 10**9, num_train_samples=None)
    if args.resume:
        try:
            solver = io.load(args.resume, backend=backend, data=data, comm=comm, **settings)
        except (OSError, ValueError, KeyError) as e:
            _fail("train", f"--resume {args.resume}: {e}")
    else:
        model = _build_model(args, data)
        per_epoch = max(data["X_train"].shape[0] // (args.batch_size * (comm.size if comm else 1)), 1)
        solver = Solver(
            model, data,
            update_rule=args.update_rule,
            optim_config={"learning_rate": args.lr},
            lr_decay=args.lr_decay,
            lr_schedule=_schedule(args, per_epoch),
            batch_size=args.batch_size,
            seed=args.seed,
            metadata={"cli": {k: getattr(args, k) for k in _RUN_OPTIONS}},
            comm=comm,
            **settings,
        )
    t0 = time.perf_counter()
    try:
        solver.train()
    except KeyboardInterrupt:
        if solver.last_checkpoint:
            where = f"; resume with: portnn train --resume {solver.last_checkpoint}"
        else:
            where = " (no checkpoint: pass --checkpoint PREFIX to be able to resume)"
        print(f"\ninterrupted{where}", file=sys.stderr)
        return 130
    elapsed = time.perf_counter() - t0
    if not root:
        return 0  # rank 0 reports, plots and saves
    test_acc = solver.check_accuracy(data["X_test"], data["y_test"])
    print(
        f"best val acc {solver.best_val_acc:.4f}  test acc {test_acc:.4f}  "
        f"({elapsed:.1f}s training, {solver.iteration} iterations)"
    )
    if args.plot:
        from .plot import plot_training

        try:
            plot_training(solver, args.plot)
        except ImportError as e:
            _fail("train", e)
        print(f"wrote {args.plot}")
    if args.save:
        io.save(solver.model, args.save)
        print(f"wrote {args.save} (+ .json)")
    return 0


def cmd_eval(args):
    from . import io

    try:
        model = io.load(args.checkpoint, backend=args.backend)
    except (OSError, ValueError, KeyError) as e:
        _fail("eval", e)
    args.model = "cnn" if len(model.input_shape) == 3 else "fcn"
    args.dtype = args.dtype or model.config["dtype"]
    try:
        data = _load_data(args)
    except (OSError, ValueError) as e:
        _fail("eval", e)
    print(f"portnn: {type(model).__name__} from {args.checkpoint} on {args.dataset}, "
          f"backend {model.backend.name}")
    for split in ("val", "test"):
        X, y = data[f"X_{split}"], data[f"y_{split}"]
        try:
            pred = model.predict(X, batch_size=args.batch_size)
        except (TypeError, ValueError) as e:
            _fail("eval", f"the checkpoint's model does not fit {args.dataset} data ({e})")
        print(f"{split} acc {float((pred == y).mean()):.4f}  ({X.shape[0]} images)")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "selftest":  # its own parser lives with the self-test
        from .selftest import main as selftest_main

        return selftest_main(argv[1:])
    args = _build_parser().parse_args(argv)
    if args.command == "train":
        return cmd_train(args)
    return cmd_eval(args)


if __name__ == "__main__":
    sys.exit(main())
