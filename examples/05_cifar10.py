"""CIFAR-10 from a local folder: load a subset, train a small conv net (or an FCN), test it.

portnn does not download anything. Get the "python version" of CIFAR-10
(cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html),
extract it, and point this script at the ``cifar-10-batches-py`` folder with
``--data-dir`` or the CIFAR10_DIR environment variable (default:
~/data/cifar-10-batches-py). When that folder does not exist the script says so
and exits with status 0 (a skip, not a failure); a folder that exists but holds
damaged or incomplete files is an error (status 1) with the loader's message.

The loader reads the pickled batches with a restricted unpickler that refuses
anything but plain arrays, and returns host NumPy arrays: train = the first
``--num-train`` images, val = the last ``--num-val`` images of the training
batches, test = the first ``--num-test`` images of test_batch, with the mean
training image subtracted.

Run:

    python examples/05_cifar10.py --data-dir ~/data/cifar-10-batches-py
    python examples/05_cifar10.py --backend torch --model fcn --num-train 10000 --epochs 5
    CIFAR10_DIR=/data/cifar-10-batches-py python examples/05_cifar10.py --backend cupy

The same run from the command line:

    portnn train --model cnn --dataset cifar10 --data-dir DIR --num-train 1000 --epochs 2

Expected output without the data:

    CIFAR-10 not found at /home/me/data/cifar-10-batches-py: skipping this example.
    To run it, download the CIFAR-10 "python version" ... and pass --data-dir DIR (or set CIFAR10_DIR).

Expected output with the data (defaults: cnn, 1000 / 500 / 500 images, 2 epochs,
about 5 s of training with numpy on a 2-core machine; chance level is 0.10):

    CIFAR-10 from DIR: X_train (1000, 3, 32, 32) / X_val (500, 3, 32, 32) / X_test (500, 3, 32, 32)
    ThreeLayerConvNet, backend numpy, float32
    (Epoch 0 / 2) train acc: ...; val_acc: ...
    (Epoch 1 / 2) loss: ...; train acc: ...; val_acc: ...
    (Epoch 2 / 2) loss: ...; train acc: ...; val_acc: ...
    test acc 0.xxx (best val acc 0.xxx, 2 epochs, ...s)
"""

import argparse
import os
import sys
import time

import portnn
from portnn.data import CIFAR10FormatError, load_cifar10
from portnn.data.cifar10 import DOWNLOAD_HINT

DEFAULT_DIR = os.path.join("~", "data", "cifar-10-batches-py")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", help="numpy | torch | array_api_strict | cupy[:N]")
    ap.add_argument("--data-dir", default=os.environ.get("CIFAR10_DIR", DEFAULT_DIR),
                    help="the cifar-10-batches-py folder (default: $CIFAR10_DIR or %(default)s)")
    ap.add_argument("--model", choices=["cnn", "fcn"], default="cnn")
    ap.add_argument("--num-train", type=int, default=1000)
    ap.add_argument("--num-val", type=int, default=500)
    ap.add_argument("--num-test", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    portnn.backends.enable_64bit(args.backend)  # a program may: JAX needs it for float64 / dropout

    folder = os.path.expanduser(args.data_dir)
    if not os.path.isdir(folder):
        print(f"CIFAR-10 not found at {folder}: skipping this example.")
        print(f"To run it, {DOWNLOAD_HINT} with --data-dir DIR (or set CIFAR10_DIR).")
        return 0
    backend = portnn.get_backend(args.backend)

    try:
        data = load_cifar10(folder, num_training=args.num_train, num_validation=args.num_val,
                            num_test=args.num_test, dtype=args.dtype)
    except (OSError, CIFAR10FormatError, ValueError) as e:  # incomplete folder, damaged file, bad sizes
        print(f"cannot load CIFAR-10: {e}", file=sys.stderr)
        return 1
    print(f"CIFAR-10 from {folder}: " + " / ".join(f"X_{s} {data['X_' + s].shape}" for s in ("train", "val", "test")))

    # Pixels are 0..255 minus the mean image, so initial weights must be small (1e-3).
    if args.model == "cnn":
        model = portnn.ThreeLayerConvNet(
            input_dim=(3, 32, 32), num_filters=16, filter_size=3, hidden_dim=100,
            weight_scale=1e-3, reg=1e-3, dtype=args.dtype, seed=args.seed, backend=backend)
    else:
        for k in ("X_train", "X_val", "X_test"):  # an FCN takes flat vectors of 3 * 32 * 32
            data[k] = data[k].reshape(data[k].shape[0], -1)
        model = portnn.FullyConnectedNet(
            [200, 100], input_dim=3 * 32 * 32, normalization="batchnorm", weight_scale=1e-3,
            reg=1e-3, dtype=args.dtype, seed=args.seed, backend=backend)
    print(f"{type(model).__name__}, backend {backend.name}, {args.dtype}")

    solver = portnn.Solver(
        model, data, update_rule="adam", optim_config={"learning_rate": 1e-3}, lr_decay=0.95,
        batch_size=50, num_epochs=args.epochs, num_train_samples=1000, seed=args.seed,
        print_every=10**9, verbose=True,
    )
    t0 = time.perf_counter()
    solver.train()
    seconds = time.perf_counter() - t0
    if data["X_test"].shape[0]:
        test_acc = solver.check_accuracy(data["X_test"], data["y_test"])
        print(f"test acc {test_acc:.3f} (best val acc {solver.best_val_acc:.3f}, "
              f"{args.epochs} epoch{'s' * (args.epochs != 1)}, {seconds:.1f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
