"""Command-line entry point: ``portnn train ...`` / ``python -m portnn train ...``.

Exit statuses: 0 success; 1 a run-time failure (training diverged, a file could not be
written after training); 2 a bad command line, reported argparse-style (the usage line,
then ONE line "portnn <command>: error: ..." in the flags' own terms), every such error
found before training starts; 130 interrupted (Ctrl-C). ``--debug`` (before or after the
command) or the environment variable PORTNN_DEBUG=1 shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import functools
import glob
import math
import os
import re
import sys
import textwrap
import time
import warnings

from . import arch
from ._checks import check_float_in, check_int
from .checkpoint_file import checkpoint_path, unwritable_reason

EXIT_RUNTIME = 1
EXIT_USAGE = 2
_EXIT_NOTE = ("exit status: 0 done; 1 a run-time failure (training diverged: the message names the "
              "iteration and the remedy); 2 a bad command line (an error message, before any training); "
              "130 interrupted. --debug or PORTNN_DEBUG=1 shows the full traceback of an error.")

# --------------------------------------------------------------------------- argument types
# argparse prints "portnn train: error: argument --flag: <message>"; the messages come from
# portnn._checks (named _ARG there, a name stripped here) or say what the flag expects.

_ARG = "value"


def _int_type(minimum=None, maximum=None, expected=None):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = text  # check_int refuses it in its own words
        try:
            return check_int(value, _ARG, minimum=minimum, maximum=maximum, expected=expected)
        except (TypeError, ValueError) as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix(f"{_ARG}: ")) from None

    parse.__name__ = "int"
    return parse


def _real_type(expected, lo, hi=math.inf, lo_open=False, hi_open=False):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = text  # check_float_in refuses strings
        try:
            return check_float_in(value, _ARG, lo, hi, lo_open=lo_open, hi_open=hi_open)
        except (TypeError, ValueError):
            got = repr(text) if isinstance(value, str) else text
            raise argparse.ArgumentTypeError(f"expected {expected}, got {got}") from None

    parse.__name__ = "float"
    return parse


_COUNT = _int_type(1)
_NONNEG = _int_type(0)

# --------------------------------------------------------------------------- the parser
# Options that describe the run (model, data, optimisation). Their argparse default is None,
# so "given by the user" can be told from "default"; _TRAIN_DEFAULTS fills them after parsing
# (lr, weight_scale and the cifar10 sizes have data-dependent defaults, filled later). A resumed
# run takes them from the checkpoint so it continues exactly the same training.
_RUN_OPTIONS = (
    "model", "arch", "dataset", "data_dir", "num_train", "num_val", "num_test", "hidden_dims", "normalization",
    "dropout", "num_filters", "filter_size", "hidden_dim", "update_rule", "lr", "lr_decay", "reg",
    "weight_scale", "batch_size", "dtype", "seed", "schedule", "warmup", "step_epochs", "step_gamma",
)
_TRAIN_DEFAULTS = {
    "model": "fcn", "dataset": "digits", "hidden_dims": [100, 100], "normalization": "none",
    "dropout": 0.0, "num_filters": 32, "filter_size": 3, "hidden_dim": 100, "update_rule": "adam",
    "lr_decay": 0.95, "reg": 1e-4, "batch_size": 50, "dtype": "float32", "seed": 0,
    "schedule": "none", "warmup": 0, "step_epochs": 5, "step_gamma": 0.5,
}
_EVAL_DEFAULTS = {"dataset": "digits", "batch_size": 500}
# Run options that checkpoints written before them lack, and the value those runs had.
_NEWER_OPTIONS = {"arch": None}
# What --arch replaces: the model choice and the options of the fixed models.
_NOT_WITH_ARCH = ("model", "hidden_dims", "normalization", "dropout", "num_filters", "filter_size", "hidden_dim")


def _option(parser, defaults, flag, help, **kw):
    """add_argument with default None; the real default (from ``defaults``) is named ONCE in
    the help, unless the help already says what the default is."""
    dest = flag[2:].replace("-", "_")
    if dest in defaults and "default" not in help:
        shown = defaults[dest]
        help += f" (default: {' '.join(map(str, shown)) if isinstance(shown, list) else shown})"
    parser.add_argument(flag, default=None, help=help, **kw)


def _add_debug(parser, top=False):
    parser.add_argument("--debug", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="on an error, show the full Python traceback (also: PORTNN_DEBUG=1)")


def _add_data_options(t):
    g = t.add_argument_group("data and backend")
    g.add_argument("--backend", default=None,
                   help="numpy | torch | cupy | jax | array_api_strict (optionally name:device, e.g. "
                        "cupy:1, torch:cuda, jax:gpu); default: $PORTNN_BACKEND or numpy. jax: this "
                        "command turns on JAX's 64-bit mode (float64, dropout masks)")
    o = functools.partial(_option, g, _TRAIN_DEFAULTS)
    o("--dataset", choices=["digits", "cifar10"],
      help="digits is bundled (8x8, 10 classes); cifar10 needs --data-dir")
    o("--data-dir", help="cifar10: folder with the CIFAR-10 python batches (cifar-10-batches-py)")
    o("--num-train", type=_COUNT, help="cifar10: training images (default 49000)")
    o("--num-val", type=_COUNT,
      help="cifar10: validation images, taken from the end of the training batches (default 1000)")
    o("--num-test", type=_COUNT, help="cifar10: test images from test_batch (default 1000)")
    o("--dtype", choices=["float32", "float64"], help="floating-point type of the model and data")


def _add_model_options(t):
    g = t.add_argument_group("model")
    o = functools.partial(_option, g, _TRAIN_DEFAULTS)
    o("--model", choices=["fcn", "cnn"], help="fcn = FullyConnectedNet, cnn = ThreeLayerConvNet")
    o("--arch", metavar="SPEC",
      help='instead of --model: a portnn.Sequential spelled as blocks, e.g. "conv32-bn-relu pool2 gap fc10" '
           "(the spellings are listed at the end of this help)")
    o("--hidden-dims", type=_COUNT, nargs="+", metavar="N", help="fcn: hidden layer sizes")
    o("--normalization", choices=["none", "batchnorm", "layernorm"], help="fcn: normalization layers")
    o("--dropout", type=_real_type("a drop probability in [0, 1)", 0.0, 1.0, hi_open=True),
      help="fcn: probability of DROPPING a hidden unit (0 = no dropout); "
           "the models' dropout_keep_ratio is 1 - this")
    o("--num-filters", type=_COUNT, help="cnn: number of conv filters")
    o("--filter-size", type=_COUNT, help="cnn: conv filter size")
    o("--hidden-dim", type=_COUNT, help="cnn: hidden affine layer size")
    o("--weight-scale", type=_real_type("a positive finite std", 0.0, lo_open=True),
      help="std of initial weights (default on digits: 0.1 fcn, 0.05 cnn; "
           "on cifar10, whose pixels are 0..255 minus the mean: 1e-3; --arch: He init, std sqrt(2 / fan_in))")
    o("--seed", type=_NONNEG, help="seeds init, dropout and batch order")


def _add_optim_options(t):
    g = t.add_argument_group("optimisation")
    o = functools.partial(_option, g, _TRAIN_DEFAULTS)
    o("--update-rule", choices=["sgd", "sgd_momentum", "rmsprop", "adam"], help="optimizer")
    o("--lr", type=_real_type("a finite learning rate >= 0", 0.0),
      help="learning rate (default: 5e-3 on digits, 1e-3 on cifar10)")
    o("--lr-decay", type=_real_type("a finite factor >= 0", 0.0), help="learning-rate factor per epoch")
    o("--reg", type=_real_type("a finite strength >= 0", 0.0), help="L2 regularisation strength")
    o("--epochs", type=_COUNT, help="epochs to train (default 15; with --resume, the checkpoint's)")
    o("--batch-size", type=_COUNT, help="minibatch size (per process under mpiexec)")
    o("--schedule", choices=["none", "step", "cosine"], help="learning-rate schedule on top of --lr-decay")
    o("--warmup", type=_NONNEG, help="linear warm-up iterations before the schedule")
    o("--step-epochs", type=_COUNT, help="step schedule: epochs between decays")
    o("--step-gamma", type=_real_type("a factor in (0, 1]", 0.0, 1.0, lo_open=True),
      help="step schedule: factor per step")


def _add_run_options(t):
    g = t.add_argument_group("checkpoints, outputs and processes")
    g.add_argument("--compile", action="store_true",
                   help="run each training step as one compiled program (Solver(compile=True); "
                        "--backend jax only)")
    g.add_argument("--checkpoint", default=None, metavar="PREFIX",
                   help="write PREFIX_epoch_E.npz (+ .json) checkpoints after every epoch; a PREFIX "
                        "that already holds checkpoints of another run is refused (see --overwrite)")
    g.add_argument("--overwrite", action="store_true",
                   help="delete the existing PREFIX_epoch_*.npz checkpoints of --checkpoint PREFIX "
                        "before training")
    g.add_argument("--resume", default=None, metavar="CKPT",
                   help="continue the run saved in CKPT (a PREFIX_epoch_E.npz or its .json): model, data "
                        "and optimisation options come from the checkpoint (giving a different value is "
                        "an error; --data-dir may point to the data's new place); --epochs may extend it")
    g.add_argument("--plot", default=None, metavar="PNG",
                   help="write loss / accuracy curves and first-layer weights to this PNG "
                        "(needs matplotlib: pip install 'portnn[plot]')")
    g.add_argument("--save", default=None, metavar="PATH", help="save the final (best) model to PATH")
    g.add_argument("--print-every", type=_COUNT, default=None, help="log the loss every N iterations")
    g.add_argument("--quiet", action="store_true", help="print only the final summary")
    g.add_argument("--distributed", choices=["auto", "none", "mpi", "nccl"], default="auto",
                   help="data-parallel training over several processes: run 'mpiexec -n N portnn train ...' "
                        "(pip install 'portnn[mpi]'). auto = MPI when started by mpiexec with N > 1, "
                        "else one process; nccl = NCCL between GPUs (cupy backend). --batch-size is per "
                        "process (a step sees N x batch-size samples); only rank 0 prints and writes "
                        "files (default: auto)")
    _add_debug(g)


def _add_eval_parser(sub):
    e = sub.add_parser("eval", help="accuracy of a saved model or checkpoint on a dataset's val/test split",
                       usage="%(prog)s [options] CHECKPOINT", epilog=_EXIT_NOTE)
    e.add_argument("checkpoint", help="a file written by --save, --checkpoint or portnn.save (the .npz "
                                      "or its .json manifest)")
    o = functools.partial(_option, e, _EVAL_DEFAULTS)
    o("--dataset", choices=["digits", "cifar10"], help="data to evaluate on")
    o("--data-dir", help="cifar10: the cifar-10-batches-py folder")
    e.add_argument("--backend", default=None, help="backend to evaluate on (default: numpy)")
    o("--batch-size", type=_COUNT, help="images per forward pass")
    o("--dtype", choices=["float32", "float64"], help="dtype of the data (default: the model's)")
    for name in ("--num-train", "--num-val", "--num-test"):
        o(name, type=_COUNT, help="cifar10 split sizes, as for train")
    _add_debug(e)
    e.set_defaults(_parser=e)


def _version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("portnn")
    except PackageNotFoundError:
        try:
            from . import __version__
        except ImportError:
            return "unknown"
        return __version__


def _build_parser():
    p = argparse.ArgumentParser(prog="portnn", description="portnn: train small networks on any array backend.",
                                epilog=_EXIT_NOTE)
    p.add_argument("--version", action="version", version=f"portnn {_version()}")
    _add_debug(p, top=True)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser(
        "train", help="train a network and report per-epoch loss/accuracy and the final test accuracy",
        usage="%(prog)s [options]", epilog=f"{arch.HELP}\n\n{textwrap.fill(_EXIT_NOTE, 100)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the --arch table keeps its columns
    )
    for add in (_add_data_options, _add_model_options, _add_optim_options, _add_run_options):
        add(t)
    t.set_defaults(_parser=t)
    _add_eval_parser(sub)
    sub.add_parser("selftest", help="check every layer, model and optimizer on a backend against numpy "
                                    "(portnn selftest --help)", add_help=False)
    return p


# --------------------------------------------------------------------------- reporting errors


def _debug(args):
    env = os.environ.get("PORTNN_DEBUG", "").strip().lower()
    return bool(getattr(args, "debug", False)) or env not in ("", "0", "false", "no", "off")


def _flag(dest):
    return "--" + dest.replace("_", "-")


def _error(args, message, status=EXIT_USAGE, all_ranks=False):
    """Report one line and exit with ``status`` (2: usage line first, as argparse does).

    Called from an except clause, ``--debug`` re-raises the error being handled instead.
    ``all_ranks``: every MPI rank fails the same way (only rank 0 prints; no abort needed).
    """
    from .distributed import mark_all_ranks, raised_on_all_ranks

    handling = sys.exc_info()[1]
    if handling is not None and _debug(args):
        raise handling
    all_ranks = all_ranks or (handling is not None and raised_on_all_ranks(handling))
    parser = args._parser
    if not all_ranks or getattr(args, "_root", True):
        if status == EXIT_USAGE:
            parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {message}", file=sys.stderr, flush=True)
    exit_ = SystemExit(status)
    if all_ranks:
        mark_all_ranks(exit_)
    raise exit_


# Names in the library's messages -> the flags that set them.
_API_NAMES = {
    "num_training": "--num-train", "num_validation": "--num-val", "num_test": "--num-test",
    "filter_size": "--filter-size", "num_filters": "--num-filters", "hidden_dim": "--hidden-dim",
    "hidden_dims": "--hidden-dims", "weight_scale": "--weight-scale", "reg": "--reg",
    "batch_size": "--batch-size", "seed": "--seed", "lr_decay": "--lr-decay",
    "warmup_iterations": "--warmup", "step_epochs": "--step-epochs", "gamma": "--step-gamma",
    "backend": "--backend", "dtype": "--dtype", "normalization": "--normalization",
}


def _in_flag_terms(message, fallback):
    """"num_training + num_validation: ..." -> "argument --num-train + --num-val: ..."; a message
    naming no flag gets ``fallback`` ("argument --flag") in front."""
    subject, sep, rest = str(message).partition(": ")
    renamed = re.sub(r"\b[a-z_]+\b", lambda m: _API_NAMES.get(m.group(0), m.group(0)), subject)
    if sep and renamed != subject:
        renamed = re.sub(r"\[\d+\]", "", renamed)  # hidden_dims[1] -> --hidden-dims
        return f"argument {renamed}: {rest}"
    return f"{fallback}: {message}"


def _show(value):
    if value is None:
        return "(default)"
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


# --------------------------------------------------------------------------- checks before any work
# (dest of the flags, the option they depend on, the value they need)
_APPLIES = (
    (("data_dir", "num_train", "num_val", "num_test"), "dataset", "cifar10"),
    (("num_filters", "filter_size", "hidden_dim"), "model", "cnn"),
    (("hidden_dims", "normalization", "dropout"), "model", "fcn"),
    (("step_epochs", "step_gamma"), "schedule", "step"),
)


def _check_applicable(args, given):
    for dests, key, needed in _APPLIES:
        actual = getattr(args, key, needed)
        for dest in dests:
            if dest in given and actual != needed:
                _error(args, f"argument {_flag(dest)}: applies to {_flag(key)} {needed} only, "
                             f"not {_flag(key)} {actual}")


def _check_arch(args):
    """--arch: no fixed-model flag beside it, and a spec that parses (a usage error, caret
    included, before any data is read). Keeps the spec in the canonical spelling, so a
    resumed run compares specs rather than their spacing."""
    _refuse_beside_arch(args, "")
    args._arch_blocks = _parse_arch(args, args.arch, "argument --arch")
    args.arch = arch.format_arch(args._arch_blocks)


def _refuse_beside_arch(args, whose):
    for dest in _NOT_WITH_ARCH:
        if dest in args._given:
            why = "--arch is the whole network" if dest == "model" else \
                f"it applies to --model {_fixed_model_of(dest)} only; --arch is the whole network"
            _error(args, f"argument {_flag(dest)}: not allowed with argument --arch{whose} ({why})")


def _fixed_model_of(dest):
    return next(needed for dests, key, needed in _APPLIES if key == "model" and dest in dests)


def _parse_arch(args, spec, where):
    try:
        return arch.parse_arch(spec)
    except ValueError as e:  # the message's own lines: what went wrong, the spec, the caret
        _error(args, f"{where}: {str(e).removeprefix('arch: ')}")


def _check_train_args(args):
    """Everything that the command line alone decides, before any file is read."""
    args._given = {k for k in _RUN_OPTIONS if getattr(args, k) is not None}
    args._arch_blocks = None
    if args.arch is not None:
        _check_arch(args)
    if args.resume:
        args.resume = checkpoint_path(args.resume)  # run options: compared with the checkpoint
    else:
        skip = ()
        if args.arch is not None:
            # The fixed models' options stay unset, so the checkpoint does not claim them.
            args.model, skip = "sequential", _NOT_WITH_ARCH
        for key, value in _TRAIN_DEFAULTS.items():
            if getattr(args, key) is None and key not in skip:
                setattr(args, key, value)
        _check_applicable(args, args._given)
        if args.dataset == "cifar10" and not args.data_dir:
            _error(args, "argument --dataset: cifar10 needs --data-dir DIR (the cifar-10-batches-py folder)")
        if args.overwrite and not args.checkpoint:
            _error(args, "argument --overwrite: applies with --checkpoint PREFIX only")
    if args.print_every is not None and args.quiet:
        _error(args, "argument --print-every: has no effect with --quiet (which prints only the summary)")


def _check_eval_args(args):
    args.checkpoint = checkpoint_path(args.checkpoint)
    given = {k for k in ("data_dir", "num_train", "num_val", "num_test") if getattr(args, k) is not None}
    for key, value in _EVAL_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    _check_applicable(args, given)
    if args.dataset == "cifar10" and not args.data_dir:
        _error(args, "argument --dataset: cifar10 needs --data-dir DIR (the cifar-10-batches-py folder)")


def _existing_checkpoints(prefix):
    """PREFIX_epoch_E.npz files, in epoch order."""
    found = []
    for path in glob.glob(glob.escape(prefix) + "_epoch_*.npz"):
        m = re.fullmatch(r"_epoch_(\d+)\.npz", path[len(prefix):])
        if m:
            found.append((int(m.group(1)), path))
    return [path for _, path in sorted(found)]


def _resumes_prefix(args, resumed):
    """True when this run continues the run whose checkpoints live under --checkpoint."""
    if resumed is None:
        return False
    own = {resumed.get("checkpoint_name"), re.sub(r"_epoch_\d+\.npz$", "", args.resume)}
    return os.path.abspath(args.checkpoint) in {os.path.abspath(p) for p in own if p}


def _check_checkpoint_prefix(args, resumed):
    """Refuse to mix two runs' checkpoints under one prefix -> the files --overwrite deletes."""
    prefix, found = args.checkpoint, _existing_checkpoints(args.checkpoint)
    if _resumes_prefix(args, resumed):
        if args.overwrite:
            _error(args, f"argument --overwrite: this run continues the checkpoints under {prefix}; "
                         f"drop --overwrite (or write to a new --checkpoint PREFIX)")
        return []
    if found and not args.overwrite:
        listed = found[0] if len(found) == 1 else f"{found[0]} ... {found[-1]}, {len(found)} files"
        _error(args, f"argument --checkpoint: {prefix} already holds checkpoints of another run ({listed}); "
                     f"choose a new PREFIX, continue that run with --resume {found[-1]}, "
                     f"or pass --overwrite to delete them before training")
    return found


def _check_outputs(args, resumed):
    """Every file the run writes, checked before data loading and training (rank 0 only).
    Returns the old checkpoints that --overwrite deletes."""
    for flag, path in (("--plot", args.plot), ("--save", args.save),
                       ("--checkpoint", args.checkpoint and args.checkpoint + "_epoch_1.npz")):
        problem = path and unwritable_reason(path)
        if problem:
            shown = args.checkpoint if flag == "--checkpoint" else path
            _error(args, f"argument {flag}: cannot write {shown}: {problem}")
    if args.plot:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            _error(args, "argument --plot: needs matplotlib: pip install 'portnn[plot]'")
    return _check_checkpoint_prefix(args, resumed) if args.checkpoint else []


# --------------------------------------------------------------------------- train


def _wants_images(args):
    """(C, H, W) data for the cnn, and for an --arch network with any block that needs
    images (a spec that starts with fc but has a conv later is refused by Sequential,
    naming the block, rather than guessed at); flattened features otherwise."""
    if args.model != "sequential":
        return args.model == "cnn"
    from .blocks import AvgPool, Conv, GlobalAvgPool, GroupNorm, MaxPool, Residual

    def any_image(chain):
        return any(isinstance(b, (Conv, MaxPool, AvgPool, GlobalAvgPool, GroupNorm))
                   or (isinstance(b, Residual) and any_image(b.blocks)) for b in chain)

    return any_image(args._arch_blocks)


def _load_data(args):
    from .data import load_cifar10, load_digits

    cnn = _wants_images(args)
    if args.dataset == "digits":
        return load_digits(dtype=args.dtype, flatten=not cnn)
    if not args.data_dir:
        _error(args, "argument --dataset: cifar10 needs --data-dir DIR (the cifar-10-batches-py folder)")
    sizes = {}
    for flag, name in (("num_train", "num_training"), ("num_val", "num_validation"), ("num_test", "num_test")):
        if getattr(args, flag) is not None:
            sizes[name] = getattr(args, flag)
    try:
        data = load_cifar10(args.data_dir, dtype=args.dtype, **sizes)
    except OSError as e:  # a missing folder or file
        _error(args, f"argument --data-dir: {e}")
    except ValueError as e:  # too many images asked for; damaged or unsafe files
        _error(args, _in_flag_terms(e, "argument --data-dir"))
    if not cnn:
        for k in ("X_train", "X_val", "X_test"):
            data[k] = data[k].reshape(data[k].shape[0], -1)
    return data


def _weight_scale(args, digits_default):
    if args.weight_scale is not None:
        return args.weight_scale
    return digits_default if args.dataset == "digits" else 1e-3


def _build_sequential(args, data, num_classes):
    from .models import Sequential

    spec = args._arch_blocks
    try:
        model = Sequential(spec, input_dim=tuple(data["X_train"].shape[1:]), reg=args.reg,
                           weight_init="he" if args.weight_scale is None else args.weight_scale,
                           dtype=args.dtype, seed=args.seed, backend=args.backend)
    except ValueError as e:  # a block that does not fit its input: Sequential names it
        message = str(e).replace("Affine(num_classes)", f"fc{num_classes}")  # in the spec's words
        _error(args, f"argument --arch: {message.replace('Residual(..., projection=True)', 'resproj( ... )')}")
    if model.num_classes != num_classes:
        _error(args, f"argument --arch: the network ends with {model.num_classes} outputs "
                     f"({arch.format_arch(spec[-1:])}) but {args.dataset} has {num_classes} classes; "
                     f"end it with fc{num_classes}")
    return model


def _build_model(args, data):
    from .models import FullyConnectedNet, ThreeLayerConvNet

    num_classes = int(data["y_train"].max()) + 1
    if args.model == "sequential":
        return _build_sequential(args, data, num_classes)
    common = dict(num_classes=num_classes, reg=args.reg, dtype=args.dtype, seed=args.seed, backend=args.backend)
    if args.model == "cnn":
        return ThreeLayerConvNet(
            input_dim=tuple(data["X_train"].shape[1:]),
            num_filters=args.num_filters,
            filter_size=args.filter_size,
            hidden_dim=args.hidden_dim,
            weight_scale=_weight_scale(args, 0.05),
            **common,
        )
    return FullyConnectedNet(
        args.hidden_dims,
        input_dim=int(data["X_train"].shape[1]),
        dropout_keep_ratio=1.0 - args.dropout,
        normalization=None if args.normalization == "none" else args.normalization,
        weight_scale=_weight_scale(args, 0.1),
        **common,
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


def _communicator(args):
    from .distributed import create_communicator

    if args.distributed == "none":
        return None
    try:
        comm = create_communicator(args.distributed)
    except (ImportError, RuntimeError, ValueError) as e:
        _error(args, f"argument --distributed: {args.distributed}: {e}")
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
            if not isinstance(e.code, int):
                print(f"rank {comm.rank}/{comm.size}: {e.code}", file=sys.stderr, flush=True)
            comm.abort(e.code if isinstance(e.code, int) else 1)
        comm.abort_on_error(e, 1)  # one rank failed: end all of them, never hang
        raise


def _read_resumed(args, comm):
    """The checkpoint's solver metadata, with its 'portnn train' options checked against the flags."""
    from . import io

    try:
        if comm is None:
            _, meta = io.load_arrays(args.resume)
        else:  # only rank 0 needs to see the file
            meta = comm.run_on_root(lambda: io.load_arrays(args.resume)[1])
        resumed = meta["solver"]
        cli = resumed["metadata"]["cli"]
        saved = {k: cli.get(k, _NEWER_OPTIONS[k]) if k in _NEWER_OPTIONS else cli[k] for k in _RUN_OPTIONS}
        resumed["epoch"], resumed["num_epochs"] = int(resumed["epoch"]), int(resumed["num_epochs"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        _error(args, f"argument --resume: {args.resume}: not a checkpoint written by 'portnn train' ({e})")
    if saved["arch"] is not None:
        _refuse_beside_arch(args, f" of {args.resume}")
    differ = [k for k in sorted(args._given - {"data_dir"}, key=_RUN_OPTIONS.index)
              if getattr(args, k) != saved[k]]
    if differ:
        listed = ", ".join(f"{_flag(k)} {_show(getattr(args, k))} (checkpoint: {_show(saved[k])})"
                           for k in differ)
        _error(args, f"argument --resume: a resumed run keeps the settings of {args.resume}, and these "
                     f"flags differ from them: {listed}; drop them, or start a new run without --resume",
               all_ranks=comm is not None)
    return resumed, saved


def _apply_resume(args, comm):
    resumed, saved = _read_resumed(args, comm)
    for key in _RUN_OPTIONS:
        if key != "data_dir" or "data_dir" not in args._given:
            setattr(args, key, saved[key])
    _check_applicable(args, args._given & {"data_dir"})
    if args.arch is not None:  # the data's shape depends on it (the model comes from the checkpoint)
        args._arch_blocks = _parse_arch(args, args.arch, f"argument --resume: {args.resume}: its --arch")
    epoch = resumed["epoch"]
    if args.epochs is None:
        args.epochs = resumed["num_epochs"]
    elif args.epochs <= epoch:
        _error(args, f"argument --epochs: {args.resume} is already at epoch {epoch}; pass --epochs "
                     f"{epoch + 1} or more to train further (portnn eval evaluates it)", all_ranks=comm is not None)
    if args.checkpoint is None:
        args.checkpoint = resumed["checkpoint_name"]
    return resumed


def _print_header(args, data, backend, comm, resumed, model):
    """The run in one line, then the model's blocks (rank 0, unless --quiet)."""
    n = data["X_train"].shape[0]
    print(
        f"portnn: {args.model} on {args.dataset} ({n} train / {data['X_val'].shape[0]} val / "
        f"{data['X_test'].shape[0]} test), backend {backend.name} ({backend.device}), {args.dtype}"
        + (f", resuming {args.resume} at epoch {resumed['epoch']}" if args.resume else "")
        + (f", {comm.size} processes ({comm.name}), batch {args.batch_size} per process"
           if comm is not None else "")
    )
    model.summary()


def _make_solver(args, data, backend, comm, resumed):
    from . import io
    from .backends import BackendError
    from .solver import Solver

    settings = dict(num_epochs=args.epochs, checkpoint_name=args.checkpoint, verbose=not args.quiet,
                    print_every=args.print_every or 10**9, num_train_samples=None, compile=args.compile)
    if args.resume:
        if "data_dir" in args._given:  # the data moved: later resumes look in the new place
            cli = dict(resumed["metadata"]["cli"], data_dir=args.data_dir)
            settings["metadata"] = dict(resumed["metadata"], cli=cli)
        try:
            return io.load(args.resume, backend=backend, data=data, comm=comm, **settings)
        except (OSError, ValueError, KeyError) as e:
            _error(args, f"argument --resume: {e}")
    try:
        model = _build_model(args, data)
        per_epoch = max(data["X_train"].shape[0] // (args.batch_size * (comm.size if comm else 1)), 1)
        return Solver(
            model, data, update_rule=args.update_rule, optim_config={"learning_rate": args.lr},
            lr_decay=args.lr_decay, lr_schedule=_schedule(args, per_epoch), batch_size=args.batch_size,
            seed=args.seed, metadata={"cli": {k: getattr(args, k) for k in _RUN_OPTIONS}}, comm=comm,
            **settings,
        )
    except BackendError as e:  # --compile on a backend that cannot compile
        _error(args, _in_flag_terms(e, "argument --compile"))
    except (TypeError, ValueError) as e:  # a combination of flags that does not fit the data
        _error(args, _in_flag_terms(e, "argument --model"))


def _cmd_train(args, comm):
    from .backends import BackendError, enable_64bit, get_backend

    args._root = comm is None or comm.is_root
    enable_64bit(args.backend)  # JAX: float64 and the int64 dropout generator need it
    if comm is not None and (args.backend or "").split(":")[0] == "cupy" and ":" not in args.backend:
        args.backend = f"cupy:{comm.local_rank}"  # one GPU per process on each node
    try:
        backend = get_backend(args.backend)
    except BackendError as e:
        _error(args, _in_flag_terms(e, "argument --backend"))
    resumed = _apply_resume(args, comm) if args.resume else None
    if args.epochs is None:
        args.epochs = 15
    if args.lr is None:
        args.lr = 5e-3 if args.dataset == "digits" else 1e-3
    old_checkpoints = _check_outputs(args, resumed) if args._root else []
    data = _load_data(args)
    solver = _make_solver(args, data, backend, comm, resumed)
    # After the model is built: the summary shows it, and a network that does not fit
    # the data is refused before anything is printed.
    if not args.quiet and args._root:
        _print_header(args, data, backend, comm, resumed, solver.model)
    for path in old_checkpoints:  # --overwrite
        for name in (path, path + ".json"):
            if os.path.exists(name):
                os.unlink(name)
    return _train_and_report(args, solver, data)


# NumPy's floating-point warnings (overflow in a layer as training diverges ...)
_FLOAT_WARNINGS = r"(overflow|invalid value|divide by zero|underflow) encountered"


def _train_and_report(args, solver, data):
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            if not _debug(args):  # the Solver reports non-finite values itself, in one line
                warnings.filterwarnings("ignore", _FLOAT_WARNINGS, RuntimeWarning)
            solver.train()
    except KeyboardInterrupt:
        if solver.last_checkpoint:
            where = f"; resume with: portnn train --resume {solver.last_checkpoint}"
        else:
            where = " (no checkpoint: pass --checkpoint PREFIX to be able to resume)"
        print(f"\ninterrupted{where}", file=sys.stderr)
        return 130
    elapsed = time.perf_counter() - t0
    if not args._root:
        return 0  # rank 0 reports, plots and saves
    test_acc = solver.check_accuracy(data["X_test"], data["y_test"])
    print(
        f"best val acc {solver.best_val_acc:.4f}  test acc {test_acc:.4f}  "
        f"({elapsed:.1f}s training, {solver.iteration} iterations)"
    )
    _write_outputs(args, solver)
    return 0


def _write_outputs(args, solver):
    from . import io

    if args.plot:
        from .plot import plot_training

        try:
            os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
            plot_training(solver, args.plot)
        except (ImportError, OSError) as e:
            _error(args, f"--plot {args.plot}: {e}", status=EXIT_RUNTIME)
        print(f"wrote {args.plot}")
    if args.save:
        try:
            io.save(solver.model, args.save)
        except OSError as e:
            _error(args, f"--save {args.save}: {e}", status=EXIT_RUNTIME)
        print(f"wrote {args.save} (+ .json)")


def _divergence_message(args, e):
    """The Solver's message says where training diverged; the remedy, in flags."""
    m = re.match(r"training diverged: .*? at iteration \d+(?: \(epoch \d+\))?", str(e))
    where = f"; last good checkpoint: {e.last_checkpoint}" if getattr(e, "last_checkpoint", None) else ""
    lr = f" (this run: {args.lr:g})" if isinstance(getattr(args, "lr", None), float) else ""
    return f"{m.group(0) if m else e}; try a smaller --lr{lr}{where}"


# --------------------------------------------------------------------------- eval


def cmd_eval(args):
    from . import io
    from .backends import BackendError, enable_64bit

    args._root = True
    try:
        enable_64bit(args.backend)  # JAX: a float64 checkpoint needs it
        model = io.load(args.checkpoint, backend=args.backend)
    except BackendError as e:
        _error(args, _in_flag_terms(e, "argument --backend"))
    except (OSError, ValueError, KeyError) as e:
        _error(args, f"argument checkpoint: {e}")
    args.model = "cnn" if len(model.input_shape) == 3 else "fcn"
    args.dtype = args.dtype or model.config["dtype"]
    data = _load_data(args)
    print(f"portnn: {type(model).__name__} from {args.checkpoint} on {args.dataset}, "
          f"backend {model.backend.name}")
    for split in ("val", "test"):
        X, y = data[f"X_{split}"], data[f"y_{split}"]
        try:
            pred = model.predict(X, batch_size=args.batch_size)
        except (TypeError, ValueError) as e:
            _error(args, f"argument --dataset: the checkpoint's model does not fit {args.dataset} data ({e})")
        print(f"{split} acc {float((pred == y).mean()):.4f}  ({X.shape[0]} images)")
    return 0


# --------------------------------------------------------------------------- main


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    rest = argv[1:] if argv[:1] == ["--debug"] else argv
    if rest and rest[0] == "selftest":  # its own parser lives with the self-test
        from .selftest import main as selftest_main

        return selftest_main(rest[1:])
    args = _build_parser().parse_args(argv)
    if args.command == "eval":
        _check_eval_args(args)
        return cmd_eval(args)
    from .solver import DivergenceError

    _check_train_args(args)
    try:
        return cmd_train(args)
    except DivergenceError as e:
        if _debug(args):
            raise
        print(f"portnn train: error: {_divergence_message(args, e)}", file=sys.stderr, flush=True)
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
