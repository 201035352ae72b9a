"""A small ResNet built from blocks with portnn.Sequential, on the digits or CIFAR-10.

stem: conv 3x3 (W filters) - batchnorm - relu; then two residual stages, each
x + f(x) followed by a relu: f = conv - bn - relu - conv - bn at W filters (same
shape, identity skip), then the same at 2W filters with a stride-2 first conv
(8x8 -> 4x4 on the digits), whose skip is a learned strided 1x1 convolution
(``Residual(..., projection=True)``); global average pooling; dropout (keep 0.7);
affine to 10 classes. Every shape is inferred from ``input_dim``;
``model.summary()`` prints them with the parameter counts. Trained with Adam
(learning rate 5e-3, batch 50, L2 1e-4) and a cosine learning-rate decay over the
whole run; the Solver keeps the weights of the best validation epoch, and the
script prints their validation and test accuracy.

``--dataset digits`` (default) uses the bundled 8x8 digits as (N, 1, 8, 8) images.
``--dataset cifar10 --data-dir DIR`` reads CIFAR-10 from a local
``cifar-10-batches-py`` folder (portnn downloads nothing); when the folder does not
exist the script says so and exits with status 0, as examples/05_cifar10.py does.

On a GPU the script is the same: ``--backend cupy`` (or ``cupy:1``) or
``--backend torch:cuda``. Parameters, optimizer state and batchnorm statistics
then live on the GPU; the Solver sends each minibatch there.

Run:

    python examples/09_resnet.py                          # digits, numpy, 15 epochs
    python examples/09_resnet.py --backend torch
    python examples/09_resnet.py --backend cupy           # or torch:cuda: the same code on a GPU
    python examples/09_resnet.py --quick                  # 3 epochs on 600 images (smoke test)
    python examples/09_resnet.py --dataset cifar10 --data-dir ~/data/cifar-10-batches-py

The same network from the command line (see ``portnn train --help`` for the spelling):

    portnn train --arch "conv24-bn-relu res(conv24-bn-relu-conv24-bn) relu resproj(conv48s2-bn-relu-conv48-bn) relu gap drop0.7 fc10" --schedule cosine --lr-decay 1

Expected output (numpy, defaults; the last number on each epoch line is seconds since
training started. On a 2-core machine: 7.5-10 s in all with OMP_NUM_THREADS=1; 13 s
with the default BLAS threads, up to 50 s when other processes compete for the cores). A batchnorm model has no
running statistics before its first step, so the first accuracies are epoch 1's:

    ResNet on digits: X_train (1197, 1, 8, 8), backend numpy (cpu), float32
    Sequential (numpy, float32)
    block   layer                           output shape  params
    ------------------------------------------------------------
            input                           (1, 8, 8)
    0       Conv(24, 3)                     (24, 8, 8)       240
    1       BatchNorm()                     (24, 8, 8)        48
    2       ReLU()                          (24, 8, 8)         -
    3       Residual                        (24, 8, 8)         -
    3.0       Conv(24, 3)                   (24, 8, 8)     5,208
    3.1       BatchNorm()                   (24, 8, 8)        48
    3.2       ReLU()                        (24, 8, 8)         -
    3.3       Conv(24, 3)                   (24, 8, 8)     5,208
    3.4       BatchNorm()                   (24, 8, 8)        48
    4       ReLU()                          (24, 8, 8)         -
    5       Residual(projection=True)       (48, 4, 4)         -
    5.0       Conv(48, 3, stride=2)         (48, 4, 4)    10,416
    5.1       BatchNorm()                   (48, 4, 4)        96
    5.2       ReLU()                        (48, 4, 4)         -
    5.3       Conv(48, 3)                   (48, 4, 4)    20,784
    5.4       BatchNorm()                   (48, 4, 4)        96
    5.proj    Conv(48, 1, stride=2, pad=0)  (48, 4, 4)     1,200
    6       ReLU()                          (48, 4, 4)         -
    7       GlobalAvgPool()                 (48,)              -
    8       Dropout(0.7)                    (48,)              -
    9       Affine(10)                      (10,)            490
    parameters: 43,882 in 24 arrays (7 regularised); buffers: 336
    (Epoch 1 / 15) loss: 1.4701; train acc: 0.7640; val_acc: 0.7400; 0.8s
    (Epoch 2 / 15) loss: 0.4771; train acc: 0.9690; val_acc: 0.9333; 1.4s
    ...
    (Epoch 8 / 15) loss: 0.0632; train acc: 1.0000; val_acc: 0.9800; 5.2s
    ...
    (Epoch 15 / 15) loss: 0.0431; train acc: 1.0000; val_acc: 0.9800; 9.7s
    val acc 0.9800 test acc 0.9867 (best epoch's weights, 15 epochs, 9.7s)

Expected output without the CIFAR-10 folder:

    CIFAR-10 not found at /home/me/data/cifar-10-batches-py: skipping this example.
    To run it, download the CIFAR-10 "python version" ... with --data-dir DIR (or set CIFAR10_DIR).
"""

import argparse
import os
import sys
import time

import portnn
from portnn.blocks import Affine, BatchNorm, Conv, Dropout, GlobalAvgPool, ReLU, Residual
from portnn.data import CIFAR10FormatError, load_cifar10, load_digits
from portnn.data.cifar10 import DOWNLOAD_HINT

DEFAULT_CIFAR_DIR = os.path.join("~", "data", "cifar-10-batches-py")


def resnet(width, keep_ratio=0.7):
    """The blocks of the network; the shapes come from the model's input_dim."""
    return [
        Conv(width, 3), BatchNorm(), ReLU(),                                   # stem
        Residual(Conv(width, 3), BatchNorm(), ReLU(), Conv(width, 3), BatchNorm()),
        ReLU(),
        Residual(Conv(2 * width, 3, stride=2), BatchNorm(), ReLU(), Conv(2 * width, 3), BatchNorm(),
                 projection=True),                                             # skip: 1x1 conv, stride 2
        ReLU(),
        GlobalAvgPool(),                                                       # (2W, H/2, W/2) -> (2W,)
        Dropout(keep_ratio),
        Affine(10),
    ]


def load_data(args):
    """(data, description), or (None, None) after printing why CIFAR-10 is skipped."""
    if args.dataset == "digits":
        data = load_digits(dtype=args.dtype, flatten=False)   # images (N, 1, 8, 8)
        if args.num_train is not None:
            data["X_train"], data["y_train"] = data["X_train"][:args.num_train], data["y_train"][:args.num_train]
        return data, "digits"
    folder = os.path.expanduser(args.data_dir)
    if not os.path.isdir(folder):
        print(f"CIFAR-10 not found at {folder}: skipping this example.")
        print(f"To run it, {DOWNLOAD_HINT} with --data-dir DIR (or set CIFAR10_DIR).")
        return None, None
    # Pixels are 0..255 minus the mean image: the stem's batchnorm makes that scale harmless.
    data = load_cifar10(folder, num_training=args.num_train or 5000, num_validation=args.num_val,
                        num_test=args.num_test, dtype=args.dtype)
    return data, f"CIFAR-10 from {folder}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", help="numpy | torch | torch:cuda | cupy[:N] | jax | array_api_strict")
    ap.add_argument("--dataset", choices=["digits", "cifar10"], default="digits")
    ap.add_argument("--data-dir", default=os.environ.get("CIFAR10_DIR", DEFAULT_CIFAR_DIR),
                    help="CIFAR-10's cifar-10-batches-py folder (default: $CIFAR10_DIR or %(default)s)")
    ap.add_argument("--epochs", type=int, default=None, help="default: 15 on digits, 5 on CIFAR-10")
    ap.add_argument("--width", type=int, default=24, help="filters of the stem and first stage (second: 2x)")
    ap.add_argument("--lr", type=float, default=5e-3, help="Adam's learning rate")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--num-train", type=int, default=None,
                    help="training images (default: all 1,197 digits; 5,000 of CIFAR-10)")
    ap.add_argument("--num-val", type=int, default=1000, help="CIFAR-10 validation images")
    ap.add_argument("--num-test", type=int, default=1000, help="CIFAR-10 test images")
    ap.add_argument("--quick", action="store_true", help="3 epochs on 600 training images (smoke test)")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    portnn.backends.enable_64bit(args.backend)  # a program may: JAX needs it for float64 / dropout
    if args.quick:
        args.epochs, args.num_train = 3, 600
    if args.epochs is None:
        args.epochs = 15 if args.dataset == "digits" else 5

    try:
        data, what = load_data(args)
    except (OSError, CIFAR10FormatError, ValueError) as e:  # incomplete folder, damaged file, bad sizes
        print(f"cannot load CIFAR-10: {e}", file=sys.stderr)
        return 1
    if data is None:
        return 0  # no CIFAR-10 folder: a skip, whatever the backend
    try:
        backend = portnn.get_backend(args.backend)
    except portnn.BackendError as e:   # e.g. cupy without a GPU: the message says why
        print(f"BackendError: {e}", file=sys.stderr)
        return 1
    print(f"ResNet on {what}: X_train {data['X_train'].shape}, backend {backend.name} ({backend.device}), "
          f"{args.dtype}")

    model = portnn.Sequential(resnet(args.width), input_dim=data["X_train"].shape[1:], reg=1e-4,
                              dtype=args.dtype, seed=args.seed, backend=backend)
    model.summary()

    steps = args.epochs * max(data["X_train"].shape[0] // args.batch_size, 1)
    solver = portnn.Solver(
        model, data, update_rule="adam", optim_config={"learning_rate": args.lr},
        lr_schedule=portnn.schedules.CosineDecay(steps),  # from lr down to 0 over the whole run
        batch_size=args.batch_size, num_epochs=args.epochs, num_train_samples=1000, seed=args.seed,
        print_every=10**9,  # epoch lines only
        verbose=True,
    )
    t0 = time.perf_counter()
    solver.train()  # afterwards the model holds the weights of the best validation epoch
    seconds = time.perf_counter() - t0

    val_acc = solver.check_accuracy(data["X_val"], data["y_val"])
    test_acc = solver.check_accuracy(data["X_test"], data["y_test"]) if data["X_test"].shape[0] else float("nan")
    print(f"val acc {val_acc:.4f} test acc {test_acc:.4f} (best epoch's weights, "
          f"{args.epochs} epoch{'s' * (args.epochs != 1)}, {seconds:.1f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
